// Loads the official @chipi-stack/backend 14.13.0 for the compatibility tests.
import { register } from "node:module";

// The npm registry has no @chipi-stack/shared 14.13.0 (nor core 0.6.0, types 14.13.0), so
// package.json overrides them to the newest published ones. shared 14.4.0 lacks three
// wallet-only exports the backend bundle imports by name, which would stop it from loading.
// This hook serves the real shared module plus placeholders for those three names only;
// none of them is used by the HTTP client or the catalog calls.
const shim = `
export async function resolve(specifier, context, next) {
  if (specifier !== "@chipi-stack/shared") return next(specifier, context);
  const real = JSON.stringify((await next(specifier, context)).url);
  const source = \`import * as real from \${real}; export * from \${real};
    export const SHHH_KIND_GAS_OVERHEAD = real.SHHH_KIND_GAS_OVERHEAD ?? {};
    export const SHHH_VERIFIER_CLASS_HASHES = real.SHHH_VERIFIER_CLASS_HASHES ?? {};
    export const withRpcFallback = real.withRpcFallback ?? (() => { throw new Error("shimmed"); });\`;
  return { url: "data:text/javascript," + encodeURIComponent(source), shortCircuit: true };
}`;
let registered = false;
function registerShim() {
  if (!registered) {
    register("data:text/javascript," + encodeURIComponent(shim));
    registered = true;
  }
}

/** The backend package's exports, loaded once through the hook above. */
export async function loadBackend() {
  registerShim();
  return import("@chipi-stack/backend");
}
