//! The sandbox environment as code sees it, defined once: the workspace, the home directory,
//! the virtual environment and the `PATH`s. The jail builds the filesystem from these, the
//! zygote starts with them and the control plane layers each run's environment on them.

/// The workspace directory inside every sandbox (`__sandbox_dir__`); also the sandbox user's
/// home directory.
pub const WORKSPACE: &str = "/home/user";
/// `HOME` of the sandbox user (the workspace).
pub const HOME: &str = WORKSPACE;
/// `USER` of the sandbox user.
pub const USER: &str = "user";
/// `PATH` in a sandbox without a virtual environment (workers).
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// The sandbox's virtual environment (containers engine): its `bin/python` is the sandbox's
/// interpreter, its site-packages are on every run's path.
pub const VENV: &str = "/opt/venv";
/// `PATH` in a containers sandbox: the venv's `bin` first, as in an activated venv.
pub const VENV_PATH: &str = "/opt/venv/bin:/usr/local/bin:/usr/bin:/bin";
/// `LANG` of every sandbox process.
pub const LANG: &str = "C.UTF-8";
/// `TMPDIR` of every sandbox process.
pub const TMPDIR: &str = "/tmp";
/// Where tools keep their caches and state, set in every run's environment: in the sandbox's
/// `/tmp`, so that what pip, uv, fontconfig (`XDG_CACHE_HOME`) and matplotlib
/// (`MPLCONFIGDIR`, which it would otherwise create under `~/.config`) write stays out of the
/// workspace and its listing. They live as long as the sandbox, like the workspace.
pub const TOOL_CACHES: [(&str, &str); 2] = [
    ("XDG_CACHE_HOME", "/tmp/.cache"),
    ("MPLCONFIGDIR", "/tmp/.config/matplotlib"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_path_is_the_venv_then_the_plain_path() {
        assert_eq!(VENV_PATH, format!("{VENV}/bin:{PATH}"));
        assert_eq!(HOME, WORKSPACE);
    }

    #[test]
    fn tool_caches_are_outside_the_workspace() {
        for (_, dir) in TOOL_CACHES {
            assert!(dir.starts_with(&format!("{TMPDIR}/")));
            assert!(!dir.starts_with(WORKSPACE));
        }
    }
}
