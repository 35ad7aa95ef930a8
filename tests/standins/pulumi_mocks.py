"""Run the Pulumi program under Pulumi's own mocks and record every resource's type and inputs."""

from __future__ import annotations

import runpy
import sys
from dataclasses import dataclass
from pathlib import Path

import pulumi

INFRA = Path(__file__).resolve().parents[2] / "infra"
# The project and billing keys every test stack shares (the quota-project pair a fresh project needs included);
# each test adds its budget, emails and whatever it is about.
BASE_CONFIG = {
    "gcp:project": "acme-ml",
    "gcp:region": "us-central1",
    "gcp:billingProject": "acme-ml",
    "gcp:userProjectOverride": "true",
    "llmops-kit:billingAccount": "01D4EE-079462-DFD6EC",
}


@dataclass
class Recorded:
    type: str
    name: str
    inputs: dict


# Resource ids in the formats pulumi-gcp documents for `pulumi import` of each type (so stack outputs built from
# `.id` look as they will on a real stack).
ID_FORMATS = {
    "gcp:secretmanager/secret:Secret": "projects/{project}/secrets/{secretId}",
    "gcp:colab/runtimeTemplate:RuntimeTemplate": "projects/{project}/locations/{location}/notebookRuntimeTemplates/{name}",
    "gcp:pubsub/topic:Topic": "projects/{project}/topics/{name}",
    "gcp:vertex/aiEndpoint:AiEndpoint": "projects/{project}/locations/{location}/endpoints/{name}",
    "gcp:vertex/aiTensorboard:AiTensorboard": "projects/{project}/locations/{region}/tensorboards/7612345678901234567",  # Vertex numbers it
    "gcp:artifactregistry/repository:Repository": "projects/{project}/locations/{location}/repositories/{repositoryId}",
    "gcp:billing/budget:Budget": "billingAccounts/{billingAccount}/budgets/de72f49d-779b-4945-a127-4d6ce8def0bb",
}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, previous_outputs: dict | None = None) -> None:
        self.resources: list[Recorded] = []
        self.dependencies: dict[str, set[str]] = {}  # resource name -> names of what it waits for (depends_on and inputs)
        self.protected: set[str] = set()  # names of resources registered with protect=True
        self.previous_outputs = previous_outputs or {}  # what a StackReference reads: the last deployment's outputs

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ == "pulumi:pulumi:StackReference":
            return args.name, {"name": args.name, "outputs": self.previous_outputs, "secretOutputNames": []}
        self.resources.append(Recorded(args.typ, args.name, dict(args.inputs)))
        state = dict(args.inputs)
        resource_id = f"{args.name}-id"
        if args.typ in ID_FORMATS:
            resource_id = ID_FORMATS[args.typ].format_map({"project": "p", "location": "l", **args.inputs})
        if args.typ == "gcp:serviceaccount/account:Account":
            state["email"] = f"{args.inputs['accountId']}@{args.inputs.get('project', 'p')}.iam.gserviceaccount.com"
            state["member"] = f"serviceAccount:{state['email']}"  # the provider's computed IAM identity
        if args.typ == "gcp:cloudfunctionsv2/function:Function":
            state["serviceConfig"] = {**state.get("serviceConfig", {}), "service": f"projects/p/services/{args.inputs.get('name')}"}
        if args.typ == "gcp:projects/iAMCustomRole:IAMCustomRole":
            state["name"] = f"projects/{args.inputs['project']}/roles/{args.inputs['roleId']}"
        if args.typ == "gcp:secretmanager/secret:Secret":
            state["name"] = resource_id
        if args.typ == "gcp:projects/serviceIdentity:ServiceIdentity":  # Google's naming of service agents
            agent = f"service-123456789012@gcp-sa-{args.inputs['service'].split('.')[0]}.iam.gserviceaccount.com"
            state |= {"email": agent, "member": f"serviceAccount:{agent}"}
        state.setdefault("name", args.inputs.get("name", args.name))
        return resource_id, state

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": "123456789012", "projectId": args.args.get("projectId")}
        return {}

    def of_type(self, suffix: str) -> list[Recorded]:
        return [r for r in self.resources if r.type.endswith(suffix)]


def run_program(config: dict[str, str], secret_keys: list[str] | None = None, stack: str = "dev",
                previous_outputs: dict | None = None) -> tuple[RecordingMocks, dict]:
    """Run infra/__main__.py under mocks; returns the recorder and the exported outputs (resolved).

    `previous_outputs`: the stack's last deployment's outputs, as a StackReference to the stack itself reads them."""
    mocks = RecordingMocks(previous_outputs)
    pulumi.runtime.set_mocks(mocks, project="llmops-kit", stack=stack, preview=False)
    monitor = pulumi.runtime.settings.get_monitor()
    register = monitor.RegisterResource

    def recording_register(request):  # the mock monitor sees each resource's dependencies; Mocks.new_resource does not
        mocks.dependencies[request.name] = {urn.rsplit("::", 1)[-1] for urn in request.dependencies}
        if request.protect:
            mocks.protected.add(request.name)
        return register(request)

    monitor.RegisterResource = recording_register
    pulumi.runtime.set_all_config(config, secret_keys or [])
    exports: dict = {}
    original_export = pulumi.export
    pulumi.export = lambda name, value: exports.__setitem__(name, value)  # record the stack outputs
    if str(INFRA) not in sys.path:
        sys.path.insert(0, str(INFRA))
    try:
        @pulumi.runtime.test
        def _run():
            runpy.run_path(str(INFRA / "__main__.py"), run_name="__main__")
            return pulumi.Output.all(**{k: pulumi.Output.from_input(v) for k, v in exports.items()}).apply(exports.update)

        _run()
    finally:
        pulumi.export = original_export
    return mocks, exports


def whole_numbers(value):
    """Pulumi carries every number as a double (a protobuf Value); the provider sends whole ones as integers."""
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value
