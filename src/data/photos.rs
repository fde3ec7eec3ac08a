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
    for input in inputs {
        if input.is_dir() {
            let mut found = Vec::new();
            let mut bad = Vec::new();
            walk_photos(input, &mut found, &mut bad);
            found.sort();
            out.extend(found.into_iter().map(Ok));
            out.extend(bad.into_iter().map(Err));
        } else if input.exists() {
            out.push(Ok(input.clone()));
        } else {
            out.push(Err((input.clone(), "no such file or folder".to_string())));
        }
    }
    out
}

fn walk_photos(dir: &Path, found: &mut Vec<PathBuf>, bad: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            bad.push((dir.to_path_buf(), format!("cannot list the folder: {e}")));
            return;
        }
    };
    for entry in entries {
        match entry {
            Ok(e) => {
                let path = e.path();
                if path.is_dir() {
                    walk_photos(&path, found, bad);
                } else if crate::imageio::has_image_extension(&path) {
                    found.push(path);
                }
            }
            Err(e) => bad.push((dir.to_path_buf(), format!("cannot list the folder: {e}"))),
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
