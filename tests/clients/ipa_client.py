"""ironic-python-agent's own API client against a Ferric gateway, as a ramdisk uses it at start:
look the node up by the machine's MACs (the first lookup of a boot gives the agent token), look
up again (the token is not given twice), heartbeat with a wrong token (refused), then with the
right one (accepted). Prints what happened as one JSON object.

Usage: ipa_client.py <api url> <mac,mac,...> [<agent api port> <token file>]
With an agent API (`ipa_agent_api.py`, serving IPA's command API with the token in the token
file), the token is written to the file before the heartbeats, which advertise that port as
the agent's: the conductor then drives the agent through it.
"""

import json
import sys

from oslo_config import cfg

from ironic_python_agent import config as ipa_config

ipa_config.populate_config()
cfg.CONF([], project="ironic-python-agent", default_config_files=[])

from ironic_python_agent import agent, errors, hardware, ironic_api_client  # noqa: E402


def main():
    url, macs = sys.argv[1], sys.argv[2].split(",")
    client = ironic_api_client.APIClient(url)
    hw = {
        "interfaces": [
            hardware.NetworkInterface("eth%d" % i, mac) for i, mac in enumerate(macs)
        ]
    }
    out = {}
    content = client.lookup_node(
        hardware_info=hw, timeout=30, starting_interval=1, max_interval=2
    )
    node = content["node"]["uuid"]
    token = content["config"]["agent_token"]
    out["node"] = node
    out["token"] = token
    out["token_required"] = content["config"].get("agent_token_required")
    port = 9999
    if len(sys.argv) > 4:
        port = int(sys.argv[3])
        with open(sys.argv[4], "w") as f:
            f.write(token)
    again = client._do_lookup(hw, None)
    out["second_token"] = again["config"]["agent_token"] if again else None
    me = agent.Host("127.0.0.1", port)
    client.agent_token = "0" * len(token)
    try:
        client.heartbeat(node, me)
        out["wrong_token"] = "accepted"
    except errors.HeartbeatError as e:
        out["wrong_token"] = "refused: %s" % e
    client.agent_token = token
    client.heartbeat(node, me)
    out["heartbeat"] = "accepted"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
