"""Starts gcplocal's Compute Engine emulator on 127.0.0.1 with the fixes capstan's
tests need, then prints `LISTENING <port>` and serves until killed.

gcplocal (PyPI) serves the instances and zone-operations REST surface, but differs
from Compute Engine where the real SDK client notices. This launcher adapts it
without modifying the installed package:

- operation ids: gcplocal mints hex ids (`uuid4()[:8]`); the API's `id` is a uint64
  and the Rust SDK rejects anything else. Operations get numeric ids here.
- fingerprints: gcplocal writes `mock-fingerprint`, which is not base64 (the API's
  `bytes` encoding); replaced by a valid base64 value.
- requestId: Compute Engine returns the first operation again for a repeated
  requestId; gcplocal ignores it. Honoured here.
- inserting an existing name: Compute Engine answers 409 alreadyExists; gcplocal
  silently overwrites. Answered as Compute Engine does.
- list filters: gcplocal ignores `filter`. The two forms capstan sends are applied:
  `labels.KEY = "VALUE"` and `labels.KEY:*`.
- `instances.aggregatedList` (`/aggregated/instances`) is missing; added.
- a test-only control route, `POST /_capstan/preempt/<project>/<zone>/<name>`, puts
  an instance in the state a preempted SPOT VM with the STOP action is in
  (TERMINATED), since gcplocal cannot preempt anything.

Usage: python gcplocal_launcher.py [port]   (0 or absent: any free port)
"""

import itertools
import re
import sys
import threading

from flask import jsonify, request as flask_request
from werkzeug.serving import make_server

from gcplocal import state as state_mod
from gcplocal.constants import COMPUTE_API_PREFIX
from gcplocal.server import create_app
from gcplocal.services.compute import service as compute
from gcplocal.utils import error_response, paginate

StateStore = state_mod.StateStore
SVC = "compute"
_op_ids = itertools.count(1_000_000_001)
_lock = threading.Lock()
_request_ops = {}

# --- numeric operation ids -------------------------------------------------------
_orig_create_operation = StateStore.create_operation


def _create_operation(self, service, project, zone=None, region=None,
                      target_link="", operation_type="insert"):
    op = _orig_create_operation(self, service, project, zone=zone, region=region,
                                target_link=target_link, operation_type=operation_type)
    old_name = op["name"]
    num = str(next(_op_ids))
    scope = zone or region or "global"
    with self._lock:
        self._operations.pop(f"{service}/{project}/operations/{scope}/{old_name}", None)
        op["id"] = num
        op["name"] = f"operation-{num}"
        if zone:
            op["zone"] = f"projects/{project}/zones/{zone}"
        self._operations[f"{service}/{project}/operations/{scope}/{op['name']}"] = op
    return dict(op)


StateStore.create_operation = _create_operation

# --- base64 fingerprints ------------------------------------------------------------
_orig_put = StateStore.put
_B64_FINGERPRINT = "bW9jay1maW5nZXJwcmludA=="


def _put(self, service, project, resource_type, resource_id, data):
    if data.get("fingerprint") == "mock-fingerprint":
        data = dict(data)
        data["fingerprint"] = _B64_FINGERPRINT
    return _orig_put(self, service, project, resource_type, resource_id, data)


StateStore.put = _put

# --- insert: requestId and name conflicts -----------------------------------------------
_orig_create_instance = compute.ComputeService.create_instance


def _create_instance(self, project, zone):
    rid = flask_request.args.get("requestId")
    with _lock:
        if rid and (project, zone, rid) in _request_ops:
            return jsonify(_request_ops[(project, zone, rid)])
        body = flask_request.get_json(silent=True) or {}
        name = body.get("name")
        if name and self.state.exists(SVC, project, f"instances/{zone}", name):
            msg = f"The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"
            return error_response(409, msg, "ALREADY_EXISTS")
        resp = _orig_create_instance(self, project, zone)
        if rid:
            _request_ops[(project, zone, rid)] = resp.get_json()
        return resp


compute.ComputeService.create_instance = _create_instance

# --- list filters -------------------------------------------------------------------
_EQ = re.compile(r'^\s*labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"\s*$')
_HAS = re.compile(r'^\s*labels\.([a-z0-9_-]+)\s*:\s*\*\s*$')


def _filter_fn(expr):
    if not expr:
        return lambda item: True
    m = _EQ.match(expr)
    if m:
        key, value = m.groups()
        return lambda item: (item.get("labels") or {}).get(key) == value
    m = _HAS.match(expr)
    if m:
        key = m.group(1)
        return lambda item: key in (item.get("labels") or {})
    return None


def _bad_filter(expr):
    return error_response(400, f"Invalid value for field 'filter': '{expr}'.", "INVALID_ARGUMENT")


def _list_instances(self, project, zone):
    fn = _filter_fn(flask_request.args.get("filter"))
    if fn is None:
        return _bad_filter(flask_request.args.get("filter"))
    items = self.state.list(SVC, project, f"instances/{zone}", fn)
    return jsonify(paginate(items, flask_request, "compute#instanceList"))


compute.ComputeService.list_instances = _list_instances


def _aggregated_instances(project):
    fn = _filter_fn(flask_request.args.get("filter"))
    if fn is None:
        return _bad_filter(flask_request.args.get("filter"))
    items = {}
    for inst in state_mod.state.list(SVC, project, "instances", fn):
        zone = inst.get("zone", "").rsplit("/", 1)[-1]
        items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(inst)
    return jsonify({"kind": "compute#instanceAggregatedList", "items": items})


def _preempt(project, zone, name):
    inst = state_mod.state.get(SVC, project, f"instances/{zone}", name)
    if not inst:
        return error_response(404, f"Instance {name} not found")
    inst["status"] = "TERMINATED"
    inst["statusMessage"] = "Instance was preempted."
    state_mod.state.put(SVC, project, f"instances/{zone}", name, inst)
    return jsonify(inst)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    app = create_app()
    app.add_url_rule(f"{COMPUTE_API_PREFIX}/projects/<project>/aggregated/instances",
                     "capstan_aggregated_instances", _aggregated_instances, methods=["GET"])
    app.add_url_rule("/_capstan/preempt/<project>/<zone>/<name>",
                     "capstan_preempt", _preempt, methods=["POST"])
    server = make_server("127.0.0.1", port, app, threaded=True)
    print(f"LISTENING {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
