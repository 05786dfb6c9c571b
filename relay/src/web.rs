//! Static files for the browser pages (`web/dist`), served by the ops listener at `/`.
//!
//! Only files inside the configured folder are ever read: the request path is
//! percent-decoded, split on `/`, and refused (404) if any segment is `..`, `.`, starts with a
//! dot, or holds a backslash, a colon or a NUL; the joined path is then resolved through the
//! file system (symbolic links included) and served only if it still lies inside the folder.
//! A path naming a folder serves its `index.html`. Content types come from the file
//! extension, with `X-Content-Type-Options: nosniff` so a browser never guesses another.

use std::io;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

/// Largest file served. The pages and their scripts are well under a megabyte; the cap keeps
/// a stray large file in the folder from being read into memory per request.
const MAX_FILE: u64 = 32 * 1024 * 1024;

/// A folder of static files.
#[derive(Clone, Debug)]
pub struct StaticFiles {
    root: PathBuf,
}

/// A file found for a request path.
#[derive(Debug, PartialEq, Eq)]
pub struct File {
    /// Its contents.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

impl StaticFiles {
    /// Serves the files under `dir`.
    ///
    /// # Errors
    /// `dir` does not exist or is not a folder (the error names it).
    pub fn new(dir: &Path) -> io::Result<Self> {
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("web folder {}: {e}", dir.display()));
        let root = dir.canonicalize().map_err(named)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("web folder {}: not a folder", dir.display()),
            ));
        }
        Ok(Self { root })
    }

    /// The folder served (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file a request path (`/player.html`, `/`, percent-encoded) names, if it is inside
    /// the folder. `None` for anything else: missing, outside, hidden, or malformed.
    pub fn resolve(&self, request_path: &str) -> Option<PathBuf> {
        let decoded = percent_decode(request_path)?;
        let mut path = self.root.clone();
        for segment in decoded.split('/').filter(|s| !s.is_empty()) {
            if segment.starts_with('.') || segment.contains(['\\', ':', '\0']) {
                return None;
            }
            // One plain name per segment: nothing the OS could read as a root or a parent.
            let mut components = Path::new(segment).components();
            match (components.next(), components.next()) {
                (Some(Component::Normal(_)), None) => path.push(segment),
                _ => return None,
            }
        }
        if path.is_dir() {
            path.push("index.html");
        }
        // Follows symbolic links; whatever they point at must still be inside the folder.
        let real = path.canonicalize().ok()?;
        (real.starts_with(&self.root) && real.is_file()).then_some(real)
    }

    /// Reads the file a request path names, or `None` (answer 404).
    pub async fn get(&self, request_path: &str) -> Option<File> {
        let path = self.resolve(request_path)?;
        let meta = tokio::fs::metadata(&path).await.ok()?;
        if meta.len() > MAX_FILE {
            tracing::warn!(path = %path.display(), size = meta.len(), "web file too large to serve");
            return None;
        }
        let body = tokio::fs::read(&path).await.ok()?;
        Some(File { body: Bytes::from(body), content_type: content_type(&path) })
    }
}

/// The `Content-Type` for a file, by its extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "ts" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "webm" => "video/webm",
        "mp4" => "video/mp4",
        _ => "application/octet-stream",
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> (tempfile::TempDir, StaticFiles) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("dist");
        std::fs::create_dir_all(root.join("lib")).unwrap();
        std::fs::write(root.join("index.html"), "<h1>pages</h1>").unwrap();
        std::fs::write(root.join("player.js"), "play()").unwrap();
        std::fs::write(root.join("lib/index.html"), "lib").unwrap();
        std::fs::write(root.join(".secret"), "hidden").unwrap();
        std::fs::write(dir.path().join("outside.txt"), "private").unwrap();
        let files = StaticFiles::new(&root).unwrap();
        (dir, files)
    }

    #[tokio::test]
    async fn serves_files_with_their_types() {
        let (_dir, files) = site();
        let f = files.get("/player.js").await.unwrap();
        assert_eq!(
            (f.body.as_ref(), f.content_type),
            (&b"play()"[..], "text/javascript; charset=utf-8")
        );
        let f = files.get("/").await.unwrap();
        assert_eq!(
            (f.body.as_ref(), f.content_type),
            (&b"<h1>pages</h1>"[..], "text/html; charset=utf-8")
        );
        assert_eq!(files.get("/lib/").await.unwrap().body.as_ref(), b"lib");
        assert_eq!(files.get("/lib").await.unwrap().body.as_ref(), b"lib");
        assert_eq!(files.get("/player%2Ejs").await.unwrap().body.as_ref(), b"play()");
        assert_eq!(files.get("/missing.html").await, None);
    }

    #[tokio::test]
    async fn nothing_outside_the_folder_or_hidden_is_served() {
        let (dir, files) = site();
        for path in [
            "/../outside.txt",
            "/lib/../../outside.txt",
            "/%2e%2e/outside.txt",
            "/%2E%2E%2Foutside.txt",
            "/lib/..%2F..%2Foutside.txt",
            "/..%5Coutside.txt",
            "/.secret",
            "/%2esecret",
            "/./player.js",
            "/player.js%00.html",
            "/%zz",
            "/%",
            "/%ff",
        ] {
            assert_eq!(files.resolve(path), None, "{path}");
        }
        // An absolute path inside the request is a name inside the folder, never the root.
        let absolute = format!("/{}", dir.path().join("outside.txt").display());
        assert_eq!(files.resolve(&absolute), None);
        assert_eq!(files.resolve(&format!("/{}", absolute.replace('/', "%2F"))), None);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_symbolic_link_out_of_the_folder_is_not_followed() {
        let (dir, files) = site();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), files.root().join("link.txt"))
            .unwrap();
        assert_eq!(files.resolve("/link.txt"), None);
        std::os::unix::fs::symlink(files.root().join("player.js"), files.root().join("alias.js"))
            .unwrap();
        assert!(files.resolve("/alias.js").is_some(), "a link inside the folder is served");
    }

    #[test]
    fn a_missing_folder_is_named_in_the_error() {
        let e = StaticFiles::new(Path::new("/nonexistent/web/dist")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/web/dist"), "{e}");
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(StaticFiles::new(file.path()).is_err());
    }
}
