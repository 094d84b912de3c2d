// Write an OpenFactory feature plugin in JavaScript.
//
// A feature plugin is a WebAssembly component that turns one recipe feature
// into typed build steps and boot checks; componentize-js builds it from an
// ES module that exports `feature`. With this library that module is:
//
//   import { defineFeature, step, check, diag } from "./openfactory-plugin.js";
//
//   export const feature = defineFeature({
//     info: { name: "motd", version: "0.1.0", summary: "A message of the day", category: "system" },
//     optionsSchema: { type: "object", additionalProperties: false,
//                      properties: { greeting: { type: "string", default: "hello" } } },
//     plan: (ctx) => [step.writeFile("/etc/motd", `${ctx.options.greeting ?? "hello"}\n`)],
//   });
//
// The host checks options against `optionsSchema` (JSON Schema draft 2020-12)
// before the plugin runs; `validate` reports what a schema cannot say, `plan`
// returns the ordered steps (or throws `new Refused(...)`), `checks` the boot
// checks. Each takes `{ recipe, options }`, plain JSON values.
//
// Build it with `openfactory plugin test DIR` (which runs componentize-js for
// you) or by hand:
//
//   componentize-js app.js --wit wit/feature.wit -n plugin -d http fetch-event -o plugin.wasm

/** Raised by `plan` to refuse the recipe with these diagnostics. */
export class Refused extends Error {
  constructor(...diagnostics) {
    super(diagnostics.map((d) => d.message).join("; "));
    this.diagnostics = diagnostics;
  }
}

/** Diagnostics: `diag.error("motd.empty", "options.greeting", "…", "write a greeting")`. */
export const diag = {
  /** A problem that stops the build. */
  error: (code, path, message, suggestion) => ({ severity: "error", code, path, message, suggestion }),
  /** A problem worth saying that does not stop the build. */
  warning: (code, path, message, suggestion) => ({ severity: "warning", code, path, message, suggestion }),
  /** The candidate within two edits of `given`, if any: for "did you mean". */
  closest(given, candidates) {
    let best;
    for (const c of candidates) {
      const d = distance(given, c);
      if (d <= 2 && (best === undefined || d < best[0] || (d === best[0] && c < best[1]))) best = [d, c];
    }
    return best?.[1];
  },
};

function distance(a, b) {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 0; i < a.length; i++) {
    let prev = row[0];
    row[0] = i + 1;
    for (let j = 0; j < b.length; j++) {
      const cur = row[j + 1];
      row[j + 1] = Math.min(prev + (a[i] === b[j] ? 0 : 1), row[j] + 1, cur + 1);
      prev = cur;
    }
  }
  return row[b.length];
}

/** Build steps, one function per kind (the `step` variant of wit/feature.wit). */
export const step = {
  install: (...packages) => ({ tag: "install-packages", val: packages }),
  remove: (...packages) => ({ tag: "remove-packages", val: packages }),
  /** A file written into the image (root-owned, 0644 unless told). */
  writeFile: (path, content, { mode = 0o644, owner = "root", group = "root" } = {}) => ({
    tag: "write-file",
    val: { path, mode, owner, group, content },
  }),
  enable: (unit) => ({ tag: "enable-service", val: unit }),
  disable: (unit) => ({ tag: "disable-service", val: unit }),
  mask: (unit) => ({ tag: "mask-service", val: unit }),
  group: (name, { system = false } = {}) => ({ tag: "add-group", val: { name, system } }),
  /** Ensure a person's account exists, in `groups` (appended). */
  user: (name, { groups = [], shell } = {}) => ({ tag: "add-user", val: { name, groups, shell, system: false } }),
  /** A system account: no home, no login. */
  systemUser: (name) => ({ tag: "add-user", val: { name, groups: [], shell: undefined, system: true } }),
  sysctl: (key, value) => ({ tag: "set-sysctl", val: { key, value } }),
  openTcp: (port) => ({ tag: "open-port", val: { port, protocol: "tcp" } }),
  openUdp: (port) => ({ tag: "open-port", val: { port, protocol: "udp" } }),
  kernelArg: (arg) => ({ tag: "add-kernel-arg", val: arg }),
  aptSource: ({ name, uris, suites, components, signedBy }) => ({
    tag: "add-apt-source",
    val: { name, uris, suites, components, signedBy },
  }),
  /** Last resort: a command run inside the image's chroot (declare it in capabilities.toml). */
  run: (description, ...argv) => ({ tag: "run", val: { argv, description } }),
};

/** How long a check may keep retrying after boot, unless told. */
export const DEFAULT_TIMEOUT_SECONDS = 120;

const bootCheck = (name, description, kind, timeout = DEFAULT_TIMEOUT_SECONDS) => ({
  name,
  description,
  kind,
  timeoutSeconds: timeout,
});

/** Boot checks: what proves the feature works in a booted image. */
export const check = {
  unitActive: (name, description, unit, { timeout } = {}) =>
    bootCheck(name, description, { tag: "unit-active", val: unit }, timeout),
  commandSucceeds: (name, description, argv, { timeout } = {}) =>
    bootCheck(name, description, { tag: "command-succeeds", val: argv }, timeout),
  tcpPortOpen: (name, description, port, { timeout } = {}) =>
    bootCheck(name, description, { tag: "port-open", val: { port, protocol: "tcp" } }, timeout),
  fileExists: (name, description, path, { timeout } = {}) =>
    bootCheck(name, description, { tag: "file-exists", val: path }, timeout),
  packageInstalled: (name, description, pkg, { timeout } = {}) =>
    bootCheck(name, description, { tag: "package-installed", val: pkg }, timeout),
};

/**
 * The component's `feature` export from a feature's parts: `info` (name,
 * version, summary, category; `reads`, `requires`, `conflicts` lists),
 * `optionsSchema`, and `validate`, `plan`, `checks` taking `{ recipe, options }`.
 */
export function defineFeature({ info, optionsSchema, validate, plan, checks }) {
  const schema = optionsSchema ?? { type: "object", additionalProperties: false };
  const context = (ctx) => ({ recipe: JSON.parse(ctx.recipe), options: JSON.parse(ctx.options) });
  // A plugin's bug is a diagnostic that says so, not a trap.
  const bug = (what, e) =>
    diag.error(
      `${info.name}.bug`,
      "",
      `the plugin failed while ${what}: ${e?.name ?? "Error"}: ${e?.message ?? String(e)}`,
      "report it to the plugin's author",
    );
  return {
    describe: () => ({
      name: info.name,
      version: info.version,
      summary: info.summary,
      category: info.category,
      optionsSchema: JSON.stringify(schema),
      reads: info.reads ?? [],
      requires: info.requires ?? [],
      conflicts: info.conflicts ?? [],
    }),
    validate(ctx) {
      try {
        return validate ? [...validate(context(ctx))] : [];
      } catch (e) {
        return [bug("validating", e)];
      }
    },
    plan(ctx) {
      let steps;
      try {
        if (!plan) throw new Refused(diag.error(`${info.name}.unimplemented`, "", "this feature plans no steps yet"));
        steps = [...plan(context(ctx))];
      } catch (e) {
        // componentize-js makes a thrown value the `err` of the result.
        throw e instanceof Refused ? e.diagnostics : [bug("planning", e)];
      }
      return steps;
    },
    checks: (ctx) => (checks ? [...checks(context(ctx))] : []),
  };
}
