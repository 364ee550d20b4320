//! `scripts/layout-link.sh`, the linker `scripts/release-build.sh` gives
//! rustc, run on a real link: rust-lld through `cc`, a static executable
//! with glibc, as the release build links terrierd. The test program is
//! x86_64 assembly.
#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory with rustc's `ld.lld` for `cc -fuse-ld=lld -B<dir>`.
fn rust_lld_dir() -> PathBuf {
    let out = |args: &[&str]| {
        let out = Command::new("rustc").args(args).output().expect("running rustc");
        String::from_utf8(out.stdout).expect("rustc prints UTF-8")
    };
    let sysroot = out(&["--print", "sysroot"]);
    let host = out(&["-vV"])
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc -vV names the host");
    Path::new(sysroot.trim()).join("lib/rustlib").join(host).join("bin/gcc-ld")
}

/// The address `nm` gives `name` in `binary`.
fn address_of(binary: &Path, name: &str) -> u64 {
    let out = Command::new("nm").arg(binary).output().expect("running nm");
    let text = String::from_utf8(out.stdout).expect("nm prints UTF-8");
    text.lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let (addr, _, symbol) = (fields.next()?, fields.next()?, fields.next()?);
            (symbol == name).then(|| u64::from_str_radix(addr, 16).ok()).flatten()
        })
        .unwrap_or_else(|| panic!("{name} is not in {}:\n{text}", binary.display()))
}

/// A listed function that ThinLTO numbered differently in this build, and
/// a listed C library function, both go ahead of an unlisted function that
/// comes first on the command line.
#[test]
fn orders_renamed_and_c_library_functions() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("prog.s");
    // Each function in its own section, as rustc emits them; `cold` first.
    std::fs::write(
        &source,
        r#"
        .section .text.cold,"ax",@progbits
        .globl cold
        cold: ret
        .section .text.hot,"ax",@progbits
        .globl "hot.llvm.111"
        "hot.llvm.111": ret
        .section .text.main,"ax",@progbits
        .globl main
        main:
            sub $8, %rsp
            mov $16, %edi
            call malloc
            mov %rax, %rdi
            call free
            call cold
            call "hot.llvm.111"
            xor %eax, %eax
            add $8, %rsp
            ret
        .section .note.GNU-stack,"",@progbits
        "#,
    )
    .unwrap();
    let object = dir.path().join("prog.o");
    let assembled = Command::new("cc").arg("-c").arg(&source).arg("-o").arg(&object).status().unwrap();
    assert!(assembled.success(), "cc could not assemble the test program");
    // The list was recorded where ThinLTO numbered `hot` 999.
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "hot.llvm.999\nmalloc\n").unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/layout-link.sh");
    let binary = dir.path().join("prog");
    let linked = Command::new(&script)
        .arg("-fuse-ld=lld")
        .arg(format!("-B{}", rust_lld_dir().display()))
        .arg("-static")
        .arg(&object)
        .arg("-o")
        .arg(&binary)
        .arg(format!("-Wl,--symbol-ordering-file={}", list.display()))
        .arg("-Wl,--no-warn-symbol-ordering")
        .output()
        .unwrap();
    assert!(linked.status.success(), "layout-link.sh failed: {}", String::from_utf8_lossy(&linked.stderr));

    let cold = address_of(&binary, "cold");
    assert!(address_of(&binary, "hot.llvm.111") < cold, "the renamed listed function was not placed first");
    assert!(address_of(&binary, "malloc") < cold, "the listed C library function was not placed first");
}
