// The package's roomer.js and roomer.d.ts are the files every roomer server serves at
// /roomer.js and /roomer.d.ts (roomer/static/ in the Python package): copied here when
// the package is packed (npm's prepack), never kept as a second copy in the repository.
import { copyFileSync } from "node:fs";

const source = new URL("../roomer/static/", import.meta.url);
for (const name of ["roomer.js", "roomer.d.ts"]) {
  copyFileSync(new URL(name, source), new URL(name, import.meta.url));
}
// The license the package is published under travels with it.
copyFileSync(new URL("../LICENSE", import.meta.url), new URL("LICENSE", import.meta.url));
