//! Content-addressed compile cache: the same source, name expressions, options and NVRTC version
//! compile once. Entries are written to a temporary directory and renamed into place, so a killed
//! process never leaves a half-written entry that a later run would trust.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const ENV_CACHE: &str = "KSMITH_CACHE_DIR";

#[derive(Debug, Clone)]
pub struct CompileCache {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub lowered: Vec<(String, String)>,
    pub compile_ms: f64,
    pub nvrtc_version: (i32, i32),
}

pub(crate) struct Entry {
    pub cubin: Vec<u8>,
    pub ptx: String,
    pub log: String,
    pub meta: Meta,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// `$KSMITH_CACHE_DIR`, else `$XDG_CACHE_HOME/kernelsmith`, else `~/.cache/kernelsmith`.
    pub fn default_location() -> Option<Self> {
        let base = std::env::var_os(ENV_CACHE)
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("kernelsmith"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kernelsmith"))
            })?;
        Some(CompileCache::new(base.join("nvrtc")))
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2.min(key.len())]).join(key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        let d = self.entry_dir(key);
        let meta: Meta = serde_json::from_slice(&std::fs::read(d.join("meta.json")).ok()?).ok()?;
        Some(Entry {
            cubin: std::fs::read(d.join("kernel.cubin")).ok()?,
            ptx: std::fs::read_to_string(d.join("kernel.ptx")).ok()?,
            log: std::fs::read_to_string(d.join("compile.log")).ok()?,
            meta,
        })
    }

    /// Best effort: a cache that cannot be written only costs a recompilation later.
    pub(crate) fn put(&self, key: &str, e: &Entry) -> std::io::Result<()> {
        let final_dir = self.entry_dir(key);
        if final_dir.join("meta.json").is_file() {
            return Ok(());
        }
        let parent = final_dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(".tmp-{key}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(tmp.join("kernel.cubin"), &e.cubin)?;
        std::fs::write(tmp.join("kernel.ptx"), &e.ptx)?;
        std::fs::write(tmp.join("compile.log"), &e.log)?;
        let meta = serde_json::to_vec_pretty(&e.meta).map_err(std::io::Error::other)?;
        std::fs::write(tmp.join("meta.json"), meta)?;
        match std::fs::rename(&tmp, &final_dir) {
            Ok(()) => Ok(()),
            // Another process won the race with an identical entry.
            Err(_) if final_dir.join("meta.json").is_file() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(())
            }
            Err(err) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(err)
            }
        }
    }
}
