//! Finding the photos that command-line inputs name: files as given, folders walked.

use std::path::{Path, PathBuf};

/// The photos named by command-line inputs, in order: a file is taken as it
/// is (so a wrongly named one is still tried and reported), a folder is
/// walked recursively for files with an image extension
/// ([`crate::imageio::has_image_extension`]) and its photos sorted by path.
/// An input that does not exist, or a folder that cannot be listed, is an
/// `Err((path, reason))` in its place.
pub fn collect_photos(inputs: &[PathBuf]) -> Vec<std::result::Result<PathBuf, (PathBuf, String)>> {
    let mut out = Vec::new();
    let mut seen = Visited::default();
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            let mut bad = Vec::new();
            walk_photos(input, &mut found, &mut bad, &mut seen);
            found.sort();
            out.extend(found.into_iter().map(Ok));
            out.extend(bad.into_iter().map(Err));
        } else if input.exists() {
            out.push(Ok(input.clone()));
        } else if input.symlink_metadata().is_ok() {
            out.push(Err((input.clone(), "a link to nothing".to_string())));
        } else {
            out.push(Err((input.clone(), "no such file or folder".to_string())));
        }
    }
    out
}

/// Folders and files already visited, by device and inode: a link back up the tree (a loop)
/// or a second link to a photo does not visit it again.
#[derive(Default)]
struct Visited(std::collections::HashSet<(u64, u64)>);

impl Visited {
    /// True the first time `meta`'s file is seen (always true where inodes are not known).
    fn first(&mut self, meta: &std::fs::Metadata) -> bool {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            self.0.insert((meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            true
        }
    }
}

fn walk_photos(
    dir: &Path,
    found: &mut Vec<PathBuf>,
    bad: &mut Vec<(PathBuf, String)>,
    seen: &mut Visited,
) {
    match std::fs::metadata(dir) {
        Ok(m) if !seen.first(&m) => return,
        Ok(_) => {}
        Err(e) => {
            bad.push((dir.to_path_buf(), format!("cannot read the folder: {e}")));
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            bad.push((dir.to_path_buf(), format!("cannot list the folder: {e}")));
            return;
        }
    };
    for entry in entries {
        let e = match entry {
            Ok(e) => e,
            Err(e) => {
                bad.push((dir.to_path_buf(), format!("cannot list the folder: {e}")));
                continue;
            }
        };
        let path = e.path();
        // Follows links; a broken link or an unreadable entry (a path longer than the system
        // allows, say, which may be a folder of photos) is reported, not skipped.
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(err) => {
                bad.push((path, format!("cannot read it: {err}")));
                continue;
            }
        };
        if meta.is_dir() {
            walk_photos(&path, found, bad, seen);
        } else if crate::imageio::has_image_extension(&path) {
            if !meta.is_file() {
                bad.push((
                    path,
                    "not a regular file (a pipe, device or socket)".to_string(),
                ));
            } else if seen.first(&meta) {
                found.push(path);
            }
        }
    }
}

/// The message for inputs that name no photo at all, e.g. an empty folder.
pub fn no_photos_message(inputs: &[PathBuf]) -> String {
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    format!(
        "no photos found in {} (looked for files ending in {})",
        names.join(", "),
        crate::imageio::IMAGE_EXTENSIONS.join(", ")
    )
}
