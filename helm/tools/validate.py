"""Validate rendered chart manifests offline against the Kubernetes API schemas.

The schemas are the ones the pinned kubernetes-validate package ships (strict: unknown
fields are errors). Usage: validate.py K8S_VERSION MANIFEST.yaml...
Kinds without a schema there are errors, except the prometheus-operator custom
resources listed in CUSTOM_KINDS, which chartcheck (helm/tools/chartcheck) decodes
strictly into the operator's own Go types instead.
"""

import sys

import kubernetes_validate
import yaml

# kind -> why kubernetes-validate does not check it here.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "CRD: checked by chartcheck against prometheus-operator's types",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "CRD: checked by chartcheck against prometheus-operator's types",
}


def main(argv):
    if len(argv) < 3:
        sys.exit("usage: validate.py K8S_VERSION MANIFEST.yaml...")
    version, files = argv[1], argv[2:]
    problems, checked, skipped = [], 0, 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            problems.append(f"{path}: renders no objects")
        for doc in docs:
            name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in CUSTOM_KINDS:
                skipped += 1
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
                checked += 1
            except kubernetes_validate.SchemaNotFoundError:
                problems.append(f"{name}: no Kubernetes {version} schema for {key[0]} {key[1]}")
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path) or "(top)"
                problems.append(f"{name}: {where}: {e.message}")
    for p in problems:
        print(f"validate: {p}", file=sys.stderr)
    print(f"validate: {checked} objects valid against Kubernetes {version} (strict), "
          f"{skipped} custom resources left to chartcheck, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
