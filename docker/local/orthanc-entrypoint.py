"""Stand-in for the orthancteam/orthanc entry point (test-only): environment -> /tmp/orthanc.json -> Orthanc.

ORTHANC__HTTP_PORT=8042 becomes {"HttpPort": 8042}; ORTHANC__DICOM_WEB__ROOT nests as {"DicomWeb": {"Root": ..}};
values parse as JSON where they can (numbers, booleans, objects), else stay strings. <NAME>_PLUGIN_ENABLED=true
loads that plugin from Debian's plugin folder. Nothing is printed that could hold a credential.
"""

import json
import os
import sys

PLUGINS = {
    "DICOM_WEB": ["libOrthancDicomWeb.so"],
    "POSTGRESQL": ["libOrthancPostgreSQLIndex.so", "libOrthancPostgreSQLStorage.so"],
}
PLUGIN_DIR = "/usr/share/orthanc/plugins"
SPECIAL = {"POSTGRESQL": "PostgreSQL", "DICOM_WEB": "DicomWeb"}


def pascal(part):
    return SPECIAL.get(part) or "".join(word.capitalize() for word in part.split("_"))


def value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def main():
    config = {"StorageDirectory": "/var/lib/orthanc/db", "Plugins": []}
    for name, raw in sorted(os.environ.items()):
        if name.startswith("ORTHANC__"):
            parts = name[len("ORTHANC__"):].split("__")
            node = config
            for part in parts[:-1]:
                node = node.setdefault(pascal(part), {})
            secret = parts[-1] in ("USERNAME", "PASSWORD")  # always strings, whatever they look like
            node[pascal(parts[-1])] = raw if secret else value(raw)
        elif name.endswith("_PLUGIN_ENABLED") and raw.lower() == "true":
            plugin = name[: -len("_PLUGIN_ENABLED")]
            config["Plugins"] += [f"{PLUGIN_DIR}/{so}" for so in PLUGINS.get(plugin, [])]
    path = "/tmp/orthanc.json"  # noqa: S108 - the pod's own emptyDir /tmp (read-only root elsewhere)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out)
    print(f"orthanc stand-in: configuration written to {path} (sections: {sorted(config)})", flush=True)
    os.execv("/usr/sbin/Orthanc", ["Orthanc", *sys.argv[1:], path])  # noqa: S606 - becomes Orthanc, no shell


main()
