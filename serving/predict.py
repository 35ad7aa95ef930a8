"""`make predict`: send the lab's example question to the local server and print the SQL."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

LAB_QUESTION = {
    "question": "Which Class has a Frequency MHz larger than 91.5, and a City of license of hyannis, nebraska?",
    "context": "CREATE TABLE table_name_12 (class VARCHAR, frequency_mhz VARCHAR, city_of_license VARCHAR)",
}


def main(url: str = "http://127.0.0.1:8080/predict") -> int:
    body = json.dumps({"instances": [LAB_QUESTION], "parameters": {"max_tokens": 100}}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            pred = json.loads(resp.read())["predictions"][0]
    except urllib.error.HTTPError as e:
        print(f"server answered {e.code}: {e.read().decode()}", file=sys.stderr)
        return 1
    except urllib.error.URLError as e:
        print(f"could not reach {url}: {e.reason} (is `make serve` running?)", file=sys.stderr)
        return 1
    print(f"Q: {LAB_QUESTION['question']}\nSQL: {pred['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
