// Standard-JSON front end to the pinned solcjs, run by ./solc-shim for forge: reads the input JSON on stdin and
// writes the output JSON on stdout (the `solcjs` CLI prints a warning line first).
// `node solc.js --version` prints the version in the native solc format (for forge).
const solc = require("solc");
const fs = require("fs");
const path = require("path");

if (process.argv.includes("--version")) {
  const v = solc.version().replace(".Emscripten.clang", ".Linux.g++");
  process.stdout.write("solc, the solidity compiler commandline interface\nVersion: " + v + "\n");
  process.exit(0);
}
const base = process.argv[2] || process.cwd();
function findImports(p) {
  for (const cand of [p, path.join(base, p)]) {
    try { return { contents: fs.readFileSync(cand, "utf8") }; } catch (e) {}
  }
  return { error: "File not found: " + p };
}
const input = fs.readFileSync(0, "utf8");
process.stdout.write(solc.compile(input, { import: findImports }));
