// The sign-up form's anti-robot check (only loaded when [web] proof_of_work = true).
// Loads the vendored ALTCHA widget (the "external" build: no inline workers, no
// injected styles) and gives it its SHA worker from this same folder, so the page's
// Content-Security-Policy needs no blob:, data: or 'unsafe-eval'.
import "./altcha.min.js";

const shaWorker = () => new Worker(new URL("./sha.js", import.meta.url), { name: "altcha-sha" });
for (const algorithm of ["SHA-256", "SHA-384", "SHA-512"]) {
  globalThis.$altcha.algorithms.set(algorithm, shaWorker);
}
