//! Compiled-component cache.
//!
//! Compiling a component with Cranelift costs hundreds of milliseconds;
//! loading a precompiled artifact costs well under one. Artifacts are keyed by
//! the component's own sha256 (`Manifest::component_digest`, not the plugin's
//! digest, which covers the assets too: bundles that differ only in assets
//! share one artifact), the wasmtime version and the engine's compatibility
//! hash, and are only ever produced by this host: a precompiled artifact is
//! native code, so one is never taken from a bundle.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

#[derive(Debug, Clone)]
pub struct CompiledCache {
    dir: Option<PathBuf>,
}

impl CompiledCache {
    /// `None` disables caching (every load compiles).
    pub fn new(dir: Option<PathBuf>) -> Self {
        CompiledCache { dir }
    }

    fn key(engine: &Engine, digest: &str) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        format!(
            "{digest}-wasmtime{}-{:016x}.cwasm",
            wasmtime_version(),
            hasher.finish()
        )
    }

    /// Load the component from the cache, or compile it and store the
    /// result. `digest` is the sha256 (hex) of the component file `wasm`.
    pub fn load(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &Path,
    ) -> wasmtime::Result<(Component, bool)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::from_file(engine, wasm)?, false));
        };
        let path = dir.join(Self::key(engine, digest));
        if path.is_file() {
            // SAFETY: the artifact was written by `precompile_component` of an
            // engine with the same compatibility hash, into the host's own cache
            // directory (see the module docs); it is never taken from a bundle.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "discarding an unusable compiled artifact")
                }
            }
        }
        let wasm_bytes = std::fs::read(wasm)?;
        let artifact = engine.precompile_component(&wasm_bytes)?;
        if let Err(e) = write_atomic(dir, &path, &artifact) {
            tracing::warn!(path = %path.display(), error = %e, "could not cache a compiled component");
        }
        // SAFETY: `artifact` was just produced by this engine.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        Ok((component, false))
    }
}

fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

pub fn wasmtime_version() -> &'static str {
    // The exact version is pinned in the workspace manifest.
    "48.0.8"
}
