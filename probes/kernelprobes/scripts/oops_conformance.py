#!/usr/bin/env python3
"""Run the C client's oops fixtures through `klogscanner --parse-file` and compare each
result with the expectations of the C test suite (check_probes, 16 cases).

usage: oops_conformance.py <dir with the C fixtures> <path to klogscanner>

A case matches when one reported oops has exactly the expected reason and its payload holds
every expected substring (kernel version, taint, modules, frames). The C test captured the
last oops of a file; the script also says whether the matching oops is the last one.
"""
import subprocess
import sys

nv = ["? _nv007312rm", "? _nv007847rm", "? _nv004049rm", "? _nv004049rm", "? _nv010019rm",
      "? _nv014983rm", "? _nv001097rm", "? rm_init_adapter", "? nv_kern_open", "? chrdev_open",
      "? do_dentry_open", "? cdev_put", "? finish_open", "? do_last", "? inode_permission",
      "? link_path_walk", "? path_openat", "? do_filp_open", "? __alloc_fd", "? do_sys_open",
      "? __audit_syscall_entry", "? sys_open", "? system_call_fastpath"]
nv_new = [f[2:] if i + 1 in (9, 16, 17) else f for i, f in enumerate(nv)]


def frames(names):
    return [f"#{i} {n}" for i, n in enumerate(names, 1)]


CASES = [
    ("watchdog", "watchdog.txt", "WARNING: at net/sched/sch_generic.c:255 dev_watchdog+0x238/0x250",
     ["Kernel Version : 3.10.4-100.fc18.x86_64", "Tainted : Not tainted",
      "Modules : ebtable_nat fuse ipt_MASQUERADE bnep bluetooth nf_conntrack_netbios_ns",
      "wire_ohci sdhci_pci mii sdhci firewire_core mmc_core crc_itu_t i2c_core sunrpc"]
     + frames(["dump_stack", "warn_slowpath_common", "warn_slowpath_fmt", "? __queue_work",
               "dev_watchdog", "? dev_deactivate_queue.constprop.30", "call_timer_fn",
               "? dev_deactivate_queue.constprop.30", "run_timer_softirq", "__do_softirq",
               "irq_exit", "smp_apic_timer_interrupt", "apic_timer_interrupt",
               "? __hrtimer_start_range_ns", "? cpuidle_enter_state", "? cpuidle_enter_state",
               "cpuidle_idle_call", "arch_cpu_idle", "cpu_startup_entry",
               "? clockevents_register_device", "start_secondary"])),
    ("alsa_bug", "ALSA.txt",
     "ALSA sound/core/pcm_lib.c:154: BUG: stream = 1, pos = 0x1138, buffer size = 0x1138, period size = 0x44e",
     ["Kernel Version : 2.6.25-14.fc9.i686 #1", "Tainted : Not tainted", "#1 warn_on_slowpath",
      "#2 ? vsnprintf", "#3 ? _spin_unlock_irqrestore", "#10 start_kernel"]),
    ("warning", "warning.txt",
     "WARNING: CPU: 1 PID: 796 at kernel/sched/core.c:2342 preempt_notifier_register+0x30/0x70",
     ["Kernel Version : 4.2.0-rc2-satori #1", "Tainted : G        W  OE",
      "Modules : vboxpci(OE) vboxnetadp(OE) vboxnetflt(OE) vboxdrv(OE) joydev pci_stub",
      "drm_kms_helper e1000e 8139too drm r8169 8139cp ptp mii pps_core wmi video"]
     + frames(["dump_stack", "warn_slowpath_common", "warn_slowpath_fmt",
               "preempt_notifier_register", "VBoxHost_RTThreadCtxHooksRegister",
               "? update_curr", "? supdrvIOCtlFast", "? VBoxDrvLinuxIOCtl_4_3_28",
               "? put_prev_entity", "? do_vfs_ioctl", "? pick_next_task_rt", "? SyS_ioctl",
               "? entry_SYSCALL_64_fastpath"])),
    ("warn_on", "warn_on.txt",
     "WARNING: CPU: 3 PID: 0 at net/sched/sch_generic.c:303 dev_watchdog+0x254/0x260",
     ["Kernel Version : 4.0.5-300.fc22.x86_64 #1", "Tainted : Not tainted",
      "Modules : rfcomm xt_multiport xt_CHECKSUM tun ipt_MASQUERADE nf_nat_masquerade_ipv4",
      "snd_hda_codec_generic snd_hda_intel snd_hda_controller snd_hda_codec k10temp snd_hwdep"]
     + frames(["dump_stack", "warn_slowpath_common", "warn_slowpath_fmt", "dev_watchdog",
               "? qdisc_rcu_free", "call_timer_fn", "? qdisc_rcu_free", "run_timer_softirq",
               "__do_softirq", "irq_exit", "smp_apic_timer_interrupt", "apic_timer_interrupt",
               "? cpuidle_enter_state", "? cpuidle_enter_state", "cpuidle_enter",
               "cpu_startup_entry", "start_secondary"])),
    ("sysctl1", "sysctl_check1.txt",
     "sysctl table check failed: net/ath1/%parent  Sysctl already exists",
     ["Kernel Version : 2.6.26-2-686 #1", "Tainted : P"]
     + frames(["set_fail", "sysctl_check_table", "sysctl_check_table", "sysctl_check_table",
               "__register_sysctl_paths", "register_sysctl_paths", "ieee80211_sysctl_vattach",
               "ieee80211_vap_setup", "ath_vap_create", "ieee80211_ioctl_create_vap",
               "ath_ioctl", "__dev_get_by_name", "ath_ioctl", "dev_ifsioc", "dev_ioctl",
               "sk_alloc", "d_alloc", "inotify_d_instantiate", "fd_install", "sock_ioctl",
               "vfs_ioctl", "do_vfs_ioctl", "sys_socketcall", "sys_ioctl",
               "sysenter_past_esp", "quirk_ali7101_acpi"])),
    ("sysctl2", "sysctl_check2.txt",
     "sysctl table check failed: net/netfilter/nf_conntrack_max .3.19.1 Missing strategy",
     ["Kernel Version : 2.6.32.53-bigmem-5-openvz #28", "Tainted : P"]
     + frames(["? set_fail", "? sysctl_check_table", "? sysctl_check_lookup",
               "? sysctl_check_table", "? sysctl_check_lookup", "? sysctl_check_table",
               "? __kmalloc", "? __register_sysctl_paths", "? proc_register",
               "? register_net_sysctl_table", "? nf_conntrack_net_init", "? setup_net",
               "? copy_net_ns", "? create_new_namespaces"])),
    ("softlockup", "soft_lockup.txt", "BUG: soft lockup - CPU#8 stuck for 22s! [ceph-osd:12347]",
     ["Kernel Version : 3.16.6-200.el7.x86_64 #1", "Tainted : Not tainted",
      "Modules : vhost_net vhost macvtap macvlan tun nf_conntrack_ipv6 nf_defrag_ipv6 ip6table_filter",
      "it drm_kms_helper ttm uas tg3 drm ptp usb_storage pps_core i2c_core hpsa"]
     + frames(["_raw_read_lock", "btrfs_tree_read_lock", "btrfs_read_lock_root_node",
               "btrfs_search_slot", "? crypto_shash_update", "btrfs_lookup_xattr",
               "__btrfs_getxattr", "btrfs_getxattr", "get_vfs_caps_from_disk",
               "audit_copy_inode", "__audit_inode", "SyS_fgetxattr", "system_call_fastpath"])),
    ("rtnl", "RTNL.txt", "RTNL: assertion failed at drivers/net/bonding/bond_main.c",
     ["Kernel Version : 3.12-trunk-amd64 #1 Debian 3.12.3-1~exp1", "Tainted : Not tainted"]
     + frames(["? dump_stack", "? bond_set_rx_mode", "? __dev_mc_add", "? igmp6_group_added",
               "? sock_def_readable", "? ipv6_dev_mc_inc", "? ipv6_sock_mc_join",
               "? do_ipv6_setsockopt.isra.6", "? pipe_write", "? SYSC_sendto",
               "? ipv6_setsockopt", "? SyS_setsockopt", "? system_call_fastpath"])),
    ("kernel_null_pointer", "kernel_null_pointer.txt",
     "BUG: unable to handle kernel NULL pointer dereference at 0000000000000118",
     ["Kernel Version : 3.7.4-204.fc18.x86_64 #1 LENOVO 27672LG/27672LG", "Tainted : Not tainted",
      "Modules : vfat fat usb_storage ipt_MASQUERADE nf_conntrack_netbios_ns nf_conntrack_broadcast",
      "crc_itu_t yenta_socket i2c_algo_bit drm_kms_helper drm i2c_core wmi video"]
     + frames(["fat_detach", "fat_evict_inode", "evict", "iput", "fsnotify_destroy_mark",
               "sys_inotify_rm_watch", "system_call_fastpath"])),
    ("kernel_bug", "kernel_bug_at_DONE.txt", "kernel BUG at mm/mmap.c:2156!",
     ["Kernel Version : 2.6.27.56-0.1-default #1", "Tainted : G",
      "Modules : ip6t_LOG xt_tcpudp xt_pkttype ipt_LOG xt_limit adi joydev snd_pcm_oss snd_mixer_oss",
      "ata_generic sata_sis pata_sis libata scsi_mod dock thermal processor thermal_sys hwmon"]
     + frames(["mmput", "exit_mm", "do_exit", "do_group_exit", "get_signal_to_deliver",
               "do_signal", "do_notify_resume", "ptregscall_common", "sysret_signal"])),
    ("irq", "irq.txt", "irq 11: nobody cared",
     ["Kernel Version : 3.10.7-100.fc18.i686.PAE #1", "Tainted : Not tainted"]
     + frames(["dump_stack", "__report_bad_irq", "note_interrupt", "? __do_softirq",
               "handle_irq_event_percpu", "handle_irq_event", "? handle_nested_irq",
               "handle_level_irq", "? do_IRQ", "? common_interrupt", "? __do_softirq",
               "? handle_irq", "? irq_exit", "? do_IRQ", "? pci_write", "? common_interrupt",
               "? audit_make_tree", "? usbdev_ioctl", "? _raw_spin_unlock_irqrestore",
               "? __setup_irq", "? kmem_cache_alloc_trace", "? vsnprintf",
               "? request_threaded_irq", "? usb_hcd_platform_shutdown",
               "? request_threaded_irq", "? usb_add_hcd", "? usb_hcd_pci_probe",
               "? rpm_resume", "? pci_device_probe", "? driver_probe_device",
               "? pci_match_device", "? __driver_attach", "? driver_probe_device",
               "? bus_for_each_dev", "? driver_attach", "? driver_probe_device",
               "? bus_add_driver", "? pci_match_id", "? driver_register",
               "? ohci_hcd_mod_init", "? ohci_hcd_mod_init", "? __pci_register_driver",
               "? uhci_hcd_init", "? do_one_initcall", "? kernel_init_freeable",
               "? do_early_param"])),
    ("gpf", "general_protection_fault.txt", "general protection fault: 0000 [#1] SMP ",
     ["Kernel Version : 3.10.0-210.el7.x86_64", "Tainted : Not tainted",
      "Modules : tun 8021q garp mrp bridge stp llc bonding ipt_REJECT xt_comment xt_multiport",
      "lpc_ich iw_cm mfd_core nfsd auth_rpcgss wmi nfs_acl lockd ipmi_si ipmi_devintf"]
     + frames(["? alloc_pipe_info", "alloc_pipe_info", "create_pipe_files", "__do_pipe_flags",
               "SyS_pipe2", "? __audit_syscall_exit", "SyS_pipe", "system_call_fastpath"])),
    ("double_fault", "double_fault.txt", "double fault: 0000 [#3] SMP ",
     ["Kernel Version : 2.6.31.5-127.fc12.x86_64 #1 Latitude E6430", "Tainted : P      D  ",
      "Modules : nls_utf8 vfat fat sit tunnel4 ext2 fuse ip6table_filter ip6_tables ebtable_nat",
      "joydev sdhci_pci sdhci usb_storage mmc_core video output [last unloaded: speedstep_lib]"]),
    ("bad_page_map", "bad_page_map.txt",
     "BUG: Bad page map in process nemo  pte:00010000 pmd:6ade7067",
     ["Kernel Version : 3.12-1-amd64 #1 Debian 3.12.9-1", "Tainted : Not tainted"]),
    ("bug_kernel_handle", "bug_kernel_handle.txt",
     "BUG: unable to handle kernel paging request at 0000000000002658",
     ["Kernel Version : 3.7.9-201.fc18.x86_64 #1 Apple Inc. MacBookPro6,2/Mac-F22586C8",
      "Tainted : PF",
      "Modules : nf_conntrack_netbios_ns nf_conntrack_broadcast ipt_MASQUERADE be2iscsi",
      "drm_kms_helper firewire_ohci drm firewire_core tg3 crc_itu_t i2c_core video usb_storage sunrpc"]
     + frames(nv)),
    ("bug_kernel_handle_new_format", "bug_kernel_handle_new.txt",
     "BUG: unable to handle kernel paging request at 0000000000002658",
     ["Kernel Version : 3.7.9-201.fc18.x86_64 #1 Apple Inc. MacBookPro6,2/Mac-F22586C8",
      "Tainted : PF"]
     + frames(nv_new)),
]


def records(klogscanner, path):
    out = subprocess.run([klogscanner, "--parse-file", path], check=True,
                         capture_output=True, text=True).stdout
    found = []
    for block in out.split("# ")[1:]:
        head, _, payload = block.partition("\n")
        found.append((head, payload))
    return found


def main():
    fixtures, klogscanner = sys.argv[1], sys.argv[2]
    matched = 0
    for name, file, reason, expected in CASES:
        found = records(klogscanner, f"{fixtures}/{file}")
        hits = [i for i, (_, p) in enumerate(found) if f"Reason: {reason}\n" in p]
        missing = []
        if hits:
            payload = found[hits[0]][1]
            # A frame "#1 x" must not match "#1 x_longer" or "#11 x".
            lines = payload.splitlines()
            for e in expected:
                if e.startswith("#"):
                    ok = any(l == f"{e} - [kernel]" for l in lines)
                else:
                    ok = e in payload
                if not ok:
                    missing.append(e)
        ok = bool(hits) and not missing
        matched += ok
        where = "last" if hits and hits[0] == len(found) - 1 else (
            f"{hits[0] + 1} of {len(found)}" if hits else "-")
        print(f"{'ok  ' if ok else 'FAIL'} {name:30} oopses={len(found)} match={where}"
              + ("" if ok else f" missing={missing if hits else 'reason'}"))
    print(f"{matched}/{len(CASES)} cases match")
    return 0 if matched == len(CASES) else 1


if __name__ == "__main__":
    sys.exit(main())
