//! Golden payloads: each `fixtures/oops/<name>.txt` gives exactly the records of
//! `<name>.expected` (set `UPDATE_GOLDEN=1` to rewrite them after a deliberate change).

use std::process::Command;

use crate::support::fixture;

const FIXTURES: [&str; 27] = [
    "warning_addresses",
    "warning_no_addresses",
    "bug_unable_to_handle",
    "gpf",
    "soft_lockup",
    "irq_nobody_cared",
    "alsa_bug",
    "rtnl",
    "bert",
    "back_to_back",
    // Newer kernels: the extension patterns, and two 6.x reports the C patterns match.
    "oops_prefix_gpf",
    "gpf_non_canonical",
    "page_fault_oops_line",
    "kasan",
    "soft_lockup_rcu_6x",
    "hard_lockup_panic",
    "hung_task",
    "rcu_stall",
    "ubsan",
    // arm64 (5.x, 6.x): the sources are listed in fixtures/oops/README.md.
    "arm64_die_6x",
    "arm64_uaccess_panic_5x",
    "arm64_bug_5x",
    "arm64_warning_6x",
    // Real arm64 console captures, complete as printed (QEMU virt, the `faulty` module).
    "arm64_null_deref_510_5x",
    "arm64_null_deref_515_5x",
    "arm64_null_deref_61_6x",
    "arm64_null_deref_66_6x",
];

fn check(name: &str) {
    let input = fixture(&format!("oops/{name}.txt"));
    let golden = fixture(&format!("oops/{name}.expected"));
    let out = Command::new(env!("CARGO_BIN_EXE_klogscanner"))
        .arg("--parse-file")
        .arg(&input)
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}");
    let got = String::from_utf8(out.stdout).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).expect("golden file");
    assert_eq!(
        got,
        want,
        "{name}: payloads differ from {}",
        golden.display()
    );
}

#[test]
fn every_fixture_matches_its_golden_payloads() {
    for name in FIXTURES {
        check(name);
    }
}

#[test]
fn fixtures_cover_every_shape() {
    let classes = |name: &str| -> Vec<String> {
        crate::support::parse_file_records(&fixture(&format!("oops/{name}.txt")))
            .into_iter()
            .map(|(head, _)| head)
            .collect()
    };
    assert_eq!(classes("bert"), ["org.clearlinux/bert/debug severity 2"]);
    assert_eq!(
        classes("irq_nobody_cared"),
        ["crash/kernel/warning severity 2"]
    );
    assert_eq!(
        classes("rtnl"),
        ["org.clearlinux/kernel/warning severity 2"]
    );
    assert_eq!(classes("gpf"), ["org.clearlinux/kernel/bug severity 4"]);
    // Two warnings and a BUG back to back, then the panic: none is lost.
    assert_eq!(
        classes("back_to_back"),
        [
            "org.clearlinux/kernel/warning severity 2",
            "org.clearlinux/kernel/warning severity 2",
            "org.clearlinux/kernel/bug severity 4",
            "org.clearlinux/kernel/panic severity 4"
        ]
    );
}

#[test]
fn modern_warning_keeps_frames_without_addresses() {
    let records = crate::support::parse_file_records(&fixture("oops/warning_no_addresses.txt"));
    let payload = &records[0].1;
    assert!(payload.contains("#1 ? __warn - [kernel]\n"), "{payload}");
    assert!(
        payload.contains("#15 ret_from_fork - [kernel]\n"),
        "{payload}"
    );
    assert!(!payload.contains("TASK"), "{payload}");
}

#[test]
fn newer_kernel_reports_are_classified() {
    let classes = |name: &str| -> Vec<String> {
        crate::support::parse_file_records(&fixture(&format!("oops/{name}.txt")))
            .into_iter()
            .map(|(head, _)| head)
            .collect()
    };
    const BUG: &str = "org.clearlinux/kernel/bug severity 4";
    const WARNING: &str = "org.clearlinux/kernel/warning severity 2";
    const PANIC: &str = "org.clearlinux/kernel/panic severity 4";
    // The 6.10+ `Oops: ` header, then the panic it causes.
    assert_eq!(classes("oops_prefix_gpf"), [BUG, PANIC]);
    assert_eq!(classes("gpf_non_canonical"), [BUG]);
    // `Oops: 0000 [#1]` after `BUG: unable to handle page fault` is part of that oops.
    assert_eq!(classes("page_fault_oops_line"), [BUG]);
    assert_eq!(classes("kasan"), [BUG]);
    assert_eq!(classes("soft_lockup_rcu_6x"), [WARNING, BUG]);
    assert_eq!(classes("hard_lockup_panic"), [BUG, PANIC]);
    // Two blocked tasks; the blocker's trace in the first report opens no record.
    assert_eq!(classes("hung_task"), [WARNING, WARNING]);
    // Three call traces, one stall.
    assert_eq!(classes("rcu_stall"), [WARNING]);
    assert_eq!(classes("ubsan"), [WARNING]);
}

#[test]
fn newer_kernel_payloads_hold_modules_version_and_frames() {
    let payload = |name: &str, index: usize| -> String {
        crate::support::parse_file_records(&fixture(&format!("oops/{name}.txt")))
            .swap_remove(index)
            .1
    };
    // Since 5.x x86 prints the module list after the call trace.
    let gpf = payload("oops_prefix_gpf", 0);
    assert!(gpf.contains("\nModules : cls_u32 sch_ingress "), "{gpf}");
    assert!(
        gpf.contains("\n#16 entry_SYSCALL_64_after_hwframe - [kernel]\n"),
        "{gpf}"
    );
    assert!(!gpf.contains("#17"), "{gpf}");
    // A hung task's version and taint come from its indented second line.
    let hung = payload("hung_task", 1);
    assert!(
        hung.contains(
            "\nKernel Version : 6.16.0-rc2-00031-gd4c6e2a87f1b #5\nTainted : G        W      \n"
        ),
        "{hung}"
    );
    assert!(
        hung.ends_with("\n#19 ret_from_fork_asm - [kernel]\n"),
        "{hung}"
    );
    // Only the first of the RCU stall's call traces: the stalled CPU's.
    let rcu = payload("rcu_stall", 0);
    assert!(
        rcu.ends_with("\n#25 entry_SYSCALL_64_after_hwframe - [kernel]\n"),
        "{rcu}"
    );
    assert!(!rcu.contains("rcu_gp_kthread"), "{rcu}");
}

#[test]
fn arm64_reports_parse_with_reason_version_taint_modules_and_frames() {
    let records =
        |name: &str| crate::support::parse_file_records(&fixture(&format!("oops/{name}.txt")));
    const BUG: &str = "org.clearlinux/kernel/bug severity 4";
    const WARNING: &str = "org.clearlinux/kernel/warning severity 2";
    const PANIC: &str = "org.clearlinux/kernel/panic severity 4";
    let heads = |name: &str| -> Vec<String> { records(name).into_iter().map(|r| r.0).collect() };
    assert_eq!(heads("arm64_die_6x"), [BUG]);
    // The fault header and its `Internal error: Oops: …` are one record, the panic another.
    assert_eq!(heads("arm64_uaccess_panic_5x"), [BUG, PANIC]);
    assert_eq!(heads("arm64_bug_5x"), [BUG]);
    assert_eq!(heads("arm64_warning_6x"), [WARNING]);

    let fault = &records("arm64_uaccess_panic_5x")[0].1;
    assert!(fault.starts_with("Crash Report:\nReason: Unable to handle kernel access to user memory outside uaccess routines at virtual address 0000000000001008\nKernel Version : 5.13.16-200.fc34.aarch64 #1\nTainted : Not tainted\nModules : virtio_gpu joydev "), "{fault}");
    assert!(
        fault.contains("\nRegister pc: __pi_memset+0x16c/0x188\n"),
        "{fault}"
    );
    assert!(fault.contains("\n#1 __pi_memset - [kernel]\n"), "{fault}");
    assert!(
        fault.ends_with("\n#17 el0t_64_sync - [kernel]\n"),
        "{fault}"
    );

    let bug = &records("arm64_bug_5x")[0].1;
    assert!(bug.contains("\nReason: kernel BUG at mm/page_table_check.c:136!\nKernel Version : 5.19.0-0.rc5.20220705gitc1084b6c5620.40.fc37.aarch64 #1\n"), "{bug}");
    assert!(bug.contains("\nModules : xt_comment "), "{bug}");
    assert!(bug.ends_with("\n#11 el0t_64_sync - [kernel]\n"), "{bug}");

    let warning = &records("arm64_warning_6x")[0].1;
    assert!(warning.contains("\nKernel Version : 6.12.20+rpt-rpi-v8 #1  Debian 1:6.12.20-1+rpt1~bpo12+1\nTainted : G        WC     \nModules : snd_seq_dummy "), "{warning}");
    assert!(
        warning.contains("\n#1 vc4_atomic_commit_tail - [kernel]\n#2 commit_tail - [kernel]\n"),
        "{warning}"
    );

    let die = &records("arm64_die_6x")[0].1;
    assert!(
        die.contains("\nKernel Version : 6.1.65-ophub #1\nTainted : Not tainted\n"),
        "{die}"
    );
    assert!(die.ends_with("\n#17 ret_from_fork - [kernel]\n"), "{die}");
}

#[test]
fn real_arm64_null_dereferences_give_reason_version_taint_modules_and_frames() {
    let records =
        |name: &str| crate::support::parse_file_records(&fixture(&format!("oops/{name}.txt")));
    const REASON: &str =
        "Reason: Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000\n";
    for (name, version, modules, last_frame) in [
        (
            "arm64_null_deref_510_5x",
            "5.10.7 #1",
            "hello(O) faulty(O) scull(O)",
            "#8 el0_sync",
        ),
        (
            "arm64_null_deref_515_5x",
            "5.15.109 #1",
            "hello(O) faulty(O) scull(O)",
            "#9 el0t_64_sync",
        ),
        (
            "arm64_null_deref_61_6x",
            "6.1.44 #1",
            "hello(O) scull(O) faulty(O)",
            "#9 el0t_64_sync",
        ),
        (
            "arm64_null_deref_66_6x",
            "6.6.84 #1",
            "hello(O) faulty(O) scull(O) ipv6",
            "#9 el0t_64_sync",
        ),
    ] {
        let found = records(name);
        // The fault header and its `Internal error: Oops: …` are one record.
        assert_eq!(found.len(), 1, "{name}");
        assert_eq!(found[0].0, "org.clearlinux/kernel/bug severity 4", "{name}");
        let payload = &found[0].1;
        let head = format!(
            "Crash Report:\n{REASON}Kernel Version : {version}\nTainted : G           O   \nModules : {modules}\nBacktrace :\n"
        );
        assert!(payload.starts_with(&head), "{name}: {payload}");
        assert!(
            payload.contains("\nRegister pc: faulty_write+0x"),
            "{name}: {payload}"
        );
        assert!(
            payload.contains("\n#1 faulty_write - [kernel]\n#2 ksys_write - [kernel]\n"),
            "{name}: {payload}"
        );
        assert!(
            payload.ends_with(&format!("\n{last_frame} - [kernel]\n")),
            "{name}: {payload}"
        );
        // `  FSC = 0x05: …` of `Mem abort info:` is no `FS` register.
        assert!(!payload.contains("Register FS:"), "{name}: {payload}");
    }
}
