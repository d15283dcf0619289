//! Stamps the git revision into `stentor --version`, so a binary found on a
//! host says which commit it is. Outside a git checkout (a source tarball, a
//! crates.io download) the revision is `unknown`; `STENTOR_GIT_REV` overrides
//! it for builds that know better (a packaging pipeline).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=STENTOR_GIT_REV");
    let rev = std::env::var("STENTOR_GIT_REV")
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points
    // to (a commit) and packed-refs. In a worktree HEAD lives in the
    // worktree's git dir and refs in the common one.
    // Only paths that exist: cargo reruns a build script on every build when
    // a path it watches is missing.
    let mut watch = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watch.push(format!("{git_dir}/HEAD"));
        if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
            let common = if std::path::Path::new(&common).is_absolute() {
                common
            } else {
                format!("{git_dir}/{common}")
            };
            watch.push(format!("{common}/packed-refs"));
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch.push(format!("{common}/{branch}"));
            }
        }
    }
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    // Outside git: watch this file only, instead of every file of the package.
    println!("cargo:rerun-if-changed=build.rs");
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    println!("cargo:rustc-env=STENTOR_GIT_REV={rev}");
    println!("cargo:rustc-env=STENTOR_VERSION_LONG={version} (git {rev})");
}
