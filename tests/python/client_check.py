"""The official Kubernetes Python client against a Trellis API server.

Usage: python3 client_check.py KUBECONFIG
Creates, lists with selectors, watches from a resourceVersion, and expects
409 on a stale update. Exits non-zero (with the failed assertion) otherwise.
"""
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
v1 = client.CoreV1Api()
ns = "default"


def cm(name, labels):
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels=labels), data={"k": name})


for name, app in [("py-a", "web"), ("py-b", "web"), ("py-c", "db")]:
    created = v1.create_namespaced_config_map(ns, cm(name, {"app": app}))
    assert created.metadata.uid, created

web = v1.list_namespaced_config_map(ns, label_selector="app=web")
assert sorted(i.metadata.name for i in web.items) == ["py-a", "py-b"], web.items
not_web = v1.list_namespaced_config_map(ns, label_selector="app notin (web)")
assert [i.metadata.name for i in not_web.items] == ["py-c"], not_web.items
by_name = v1.list_namespaced_config_map(ns, field_selector="metadata.name=py-b")
assert [i.metadata.name for i in by_name.items] == ["py-b"]

rv = v1.list_namespaced_config_map(ns).metadata.resource_version
v1.create_namespaced_config_map(ns, cm("py-d", {"app": "web"}))
v1.delete_namespaced_config_map("py-a", ns)
events = []
for ev in watch.Watch().stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=2):
    events.append((ev["type"], ev["object"].metadata.name))
assert events == [("ADDED", "py-d"), ("DELETED", "py-a")], events

current = v1.read_namespaced_config_map("py-b", ns)
current.data = {"k": "first"}
v1.replace_namespaced_config_map("py-b", ns, current)
current.data = {"k": "stale"}
try:
    v1.replace_namespaced_config_map("py-b", ns, current)
    raise AssertionError("a stale update was accepted")
except ApiException as e:
    assert e.status == 409, e
assert v1.read_namespaced_config_map("py-b", ns).data == {"k": "first"}
print("python client: all checks passed")
