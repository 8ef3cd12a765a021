//! The web client's files (PROTOCOL.md section 18), built into the binary from `src/web/`.
//!
//! Owns the table of paths, their bytes, content types and ETags (the MD5 of the bytes,
//! computed once). Never reads the filesystem at run time: the binary is the whole install.

use md5::{Digest, Md5};
use std::sync::OnceLock;

pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(path: &'static str, content_type: &'static str, body: &'static [u8]) -> Asset {
        Asset { path, content_type, body, etag: OnceLock::new() }
    }

    /// The quoted ETag of the bytes.
    pub fn etag(&self) -> String {
        self.etag
            .get_or_init(|| {
                let hex: String = Md5::digest(self.body).iter().take(8).map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .clone()
    }
}

static ASSETS: [Asset; 4] = [
    Asset::new("/", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    Asset::new("/index.html", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    Asset::new("/app.js", "text/javascript; charset=utf-8", include_bytes!("../web/app.js")),
    Asset::new("/app.css", "text/css; charset=utf-8", include_bytes!("../web/app.css")),
];

/// The asset served at `path`.
pub fn find(path: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.path == path)
}
