"""ironic-python-agent's own command API, serving commands that touch no hardware.

The API is IPA's: its werkzeug `Application` (routes, agent-token check, error format), its
`ExecuteCommandMixin` (one command at a time, "Agent is busy"), its sync and async command
results and their JSON. Only the extensions are stand-ins: each command records its call and
answers what IPA's generic hardware manager would, without running anything on this machine
(IPA's real clean and deploy steps would erase its disks).

Usage: ipa_agent_api.py --port P --token-file F --calls FILE [--tls-dir D]
The agent token is read from F at each request (the ramdisk's lookup writes it there; until
then every request is refused, as IPA refuses requests without its token). Each command
accepted is appended to FILE as one JSON line: {"name": "clean.execute_clean_step", "step":
"deploy.erase_devices_metadata"}. With --tls-dir it serves HTTPS with the certificate IPA's
automatic TLS makes (`tls_utils`: self-signed, for 127.0.0.1), written to D/agent.crt for the
heartbeat's `agent_verify_ca`. The server runs until killed.
"""

import argparse
import json
import threading
import time

from oslo_config import cfg

from ironic_python_agent import config as ipa_config
from ironic_python_agent.api import app as ipa_app
from ironic_python_agent.extensions import base

LOCK = threading.Lock()
CALLS = None

CLEAN_STEPS = [
    {"step": "erase_devices", "priority": 10, "interface": "deploy",
     "reboot_requested": False, "abortable": True},
    {"step": "erase_devices_metadata", "priority": 99, "interface": "deploy",
     "reboot_requested": False, "abortable": True},
    {"step": "burnin_cpu", "priority": 0, "interface": "deploy",
     "reboot_requested": False, "abortable": True},
]
DEPLOY_STEPS = [
    {"step": "write_image", "priority": 0, "interface": "deploy",
     "reboot_requested": False},
]
VERSION = {"generic_hardware_manager": "1.2"}


def record(name, step=None):
    entry = {"name": name}
    if step is not None:
        entry["step"] = "%s.%s" % (step.get("interface"), step.get("step"))
    with LOCK:
        with open(CALLS, "a") as f:
            f.write(json.dumps(entry) + "\n")


def work():
    # Long enough that the conductor sees the command running at least once.
    time.sleep(0.3)


class Clean(base.BaseAgentExtension):
    @base.sync_command("get_clean_steps")
    def get_clean_steps(self, node, ports):
        record("clean.get_clean_steps")
        return {"clean_steps": {"GenericHardwareManager": CLEAN_STEPS},
                "hardware_manager_version": VERSION}

    @base.async_command("execute_clean_step")
    def execute_clean_step(self, step, node, ports, clean_version=None, **kwargs):
        record("clean.execute_clean_step", step)
        if clean_version not in (None, VERSION):
            raise ValueError("clean version mismatch: %s" % clean_version)
        work()
        return {"clean_result": None, "clean_step": step}


class Deploy(base.BaseAgentExtension):
    @base.sync_command("get_deploy_steps")
    def get_deploy_steps(self, node, ports):
        record("deploy.get_deploy_steps")
        return {"deploy_steps": {"GenericHardwareManager": DEPLOY_STEPS},
                "hardware_manager_version": VERSION}

    @base.async_command("execute_deploy_step")
    def execute_deploy_step(self, step, node, ports, deploy_version=None, **kwargs):
        record("deploy.execute_deploy_step", step)
        if step.get("step") == "write_image" and not step["args"]["image_info"]["urls"]:
            raise ValueError("no image URL")
        work()
        return {"deploy_result": None, "deploy_step": step}


class Standby(base.BaseAgentExtension):
    @base.sync_command("get_partition_uuids")
    def get_partition_uuids(self):
        record("standby.get_partition_uuids")
        return {"root uuid": "0x12345678"}

    @base.async_command("power_off")
    def power_off(self):
        record("standby.power_off")

    @base.sync_command("sync")
    def sync(self):
        record("standby.sync")


class Image(base.BaseAgentExtension):
    @base.async_command("install_bootloader")
    def install_bootloader(self, root_uuid, efi_system_part_uuid=None,
                           prep_boot_part_uuid=None, target_boot_mode="bios",
                           ignore_bootloader_failure=None):
        record("image.install_bootloader")
        work()


class Ext:
    def __init__(self, obj):
        self.obj = obj


class Agent(base.ExecuteCommandMixin):
    def __init__(self, token_file):
        super().__init__()
        self.token_file = token_file
        self.ext_mgr = {
            "clean": Ext(Clean(self)),
            "deploy": Ext(Deploy(self)),
            "standby": Ext(Standby(self)),
            "image": Ext(Image(self)),
        }

    def validate_agent_token(self, token):
        try:
            with open(self.token_file) as f:
                mine = f.read().strip()
        except OSError:
            return False
        return bool(token) and bool(mine) and token == mine

    def list_command_results(self):
        return list(self.command_results.values())

    def get_command_result(self, result_id):
        from ironic_python_agent import errors
        try:
            return self.command_results[result_id]
        except KeyError:
            raise errors.RequestedObjectNotFoundError("Command Result", result_id)

    def force_heartbeat(self):
        # The test's conductor polls; there is no heartbeater here.
        pass


def main():
    global CALLS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--token-file", required=True)
    p.add_argument("--calls", required=True)
    p.add_argument("--tls-dir")
    args = p.parse_args()
    CALLS = args.calls
    open(CALLS, "w").close()
    # IPA's options (the API times each request with its metrics settings).
    if "metrics" not in cfg.CONF:
        ipa_config.populate_config()
    cfg.CONF(args=[], project="ironic-python-agent", default_config_files=[])
    application = ipa_app.Application(Agent(args.token_file), None)
    from werkzeug.serving import make_server
    ssl_context = None
    if args.tls_dir:
        import os
        from ironic_python_agent import tls_utils
        cert = os.path.join(args.tls_dir, "agent.crt")
        key = os.path.join(args.tls_dir, "agent.key")
        tls_utils._generate_tls_certificate(cert, key, "ipa-test", "127.0.0.1")
        ssl_context = (cert, key)
    server = make_server("127.0.0.1", args.port, application, threaded=True,
                         ssl_context=ssl_context)
    print("serving", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
