// Validates custom resources against their CRD schemas with the kubernetes-models packages
// (@kubernetes-models/keda, @kubernetes-models/prometheus-operator).
// Usage: node validate_crds.mjs TOOLS_DIR < objects.json  (a JSON array of objects)
// Prints a JSON array: {kind, name, ok, error} per object. Exit 0 even when objects are invalid.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const tools = process.argv[2];
const packages = {
  "keda.sh": "@kubernetes-models/keda",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = obj.apiVersion.split("/");
  const name = obj.metadata?.name;
  const pkg = packages[group];
  const file = pkg && join(tools, "node_modules", pkg, group, version, `${obj.kind}.js`);
  if (!file || !existsSync(file)) {
    results.push({ kind: obj.kind, name, ok: false, error: `no schema for ${obj.apiVersion} ${obj.kind}` });
    continue;
  }
  const Model = (await import(pathToFileURL(file).href))[obj.kind];
  try {
    new Model(obj).validate();
    results.push({ kind: obj.kind, name, ok: true, error: null });
  } catch (err) {
    results.push({ kind: obj.kind, name, ok: false, error: String(err.message ?? err) });
  }
}
process.stdout.write(JSON.stringify(results) + "\n");
