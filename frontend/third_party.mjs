// Lists the npm packages bundled into viewer.js with their licences (from the esbuild metafile).
import { readFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";

const meta = JSON.parse(readFileSync(process.argv[2], "utf8"));
const packages = new Map();
for (const input of Object.keys(meta.inputs)) {
  const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
  if (!match || packages.has(match[1])) continue;
  const manifest = join("node_modules", match[1], "package.json");
  if (!existsSync(manifest)) continue;
  const info = JSON.parse(readFileSync(manifest, "utf8"));
  packages.set(match[1], `${info.name} ${info.version}: ${info.license || "see package"} (${info.homepage || info.repository?.url || ""})`);
}
console.log("viewer.js bundles these npm packages (name version: licence):");
for (const line of [...packages.values()].sort()) console.log(line);
