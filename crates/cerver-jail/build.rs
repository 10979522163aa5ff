//! Compiles `policy/seccomp.json` into seccomp-bpf programs with the `cerver-seccomp-policy`
//! crate (which documents the rules and the programs' shape).
//!
//! Outputs, in `$OUT_DIR` (each instruction is a `struct sock_filter`: 8 bytes):
//! - `seccomp_zygote.bpf` and `seccomp_run.bpf`: the allow-list (the same program: the policy
//!   has one allow-list; the zygote and the runs each install it, see src/seccomp.rs);
//! - `seccomp_clone3.bpf`: the `enosys` list → `Errno(ENOSYS)`, everything else allowed;
//! - `seccomp_syscalls.rs`: the target's syscall name → number table, as a Rust slice expression.
//!
//! The build fails, listing every problem, when the policy is invalid.

use std::path::{Path, PathBuf};

use cerver_seccomp_policy::{Arch, Tables, compile, encode};

fn main() {
    println!("cargo:rerun-if-changed=policy/seccomp.json");
    println!("cargo:rerun-if-changed=build.rs");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let arch = Arch::from_target(&env("CARGO_CFG_TARGET_ARCH"))
        .unwrap_or_else(|e| panic!("cerver-jail: {e}"));
    let endian = env("CARGO_CFG_TARGET_ENDIAN");
    assert!(
        endian == "little",
        "cerver-jail: seccomp policy: unexpected target endianness {endian:?}"
    );
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let path = manifest_dir.join("policy").join("seccomp.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cerver-jail: cannot read {}: {e}", path.display()));
    let compiled = compile(&text, arch).unwrap_or_else(|errors| {
        let list = errors.join("\n  - ");
        panic!(
            "cerver-jail: invalid seccomp policy {}:\n  - {list}",
            path.display()
        )
    });
    let main = encode(&compiled.main);
    write_file(&out_dir.join("seccomp_zygote.bpf"), &main);
    write_file(&out_dir.join("seccomp_run.bpf"), &main);
    write_file(
        &out_dir.join("seccomp_clone3.bpf"),
        &encode(&compiled.clone3),
    );
    let table = Tables::for_arch(arch).to_rust();
    write_file(&out_dir.join("seccomp_syscalls.rs"), table.as_bytes());
}

fn write_file(path: &Path, bytes: &[u8]) {
    // Only rewrite on change, to keep rebuilds of dependents minimal.
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("cerver-jail: cannot write {}: {e}", path.display()));
}
