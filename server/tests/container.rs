//! The container recipe. No container engine runs on the CI machine, so the
//! image itself is not built here; what can be checked is.
//!
//! The shipped seccomp profile, `deploy/seccomp-io_uring.json`: it allows
//! io_uring and refuses what a container must not do; and stentor runs under
//! exactly that profile, compiled here to a BPF filter the way a container
//! runtime would (libseccomp's semantics for the subset the profile uses):
//! startup, /healthz, a stream, a publish delivered to it, /metrics, and a
//! clean SIGTERM exit.

mod support;

use std::collections::HashMap;

use serde_json::Value;

const PROFILE: &str = include_str!("../../deploy/seccomp-io_uring.json");

fn profile() -> Value {
    serde_json::from_str(PROFILE).expect("deploy/seccomp-io_uring.json is JSON")
}

/// Names the profile lets through with no condition.
fn allowed_unconditionally(p: &Value) -> Vec<String> {
    p["syscalls"]
        .as_array()
        .expect("syscalls array")
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
        .flat_map(|r| r["names"].as_array().expect("names").iter())
        .map(|n| n.as_str().expect("name is a string").to_string())
        .collect()
}

#[test]
fn the_profile_allows_io_uring_and_refuses_container_escapes() {
    let p = profile();
    assert_eq!(
        p["defaultAction"], "SCMP_ACT_ERRNO",
        "an allowlist, not a denylist"
    );
    let allowed = allowed_unconditionally(&p);
    for call in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(allowed.contains(&call.to_string()), "{call} is not allowed");
    }
    for call in [
        "mount",
        "umount2",
        "pivot_root",
        "chroot",
        "ptrace",
        "bpf",
        "unshare",
        "setns",
        "keyctl",
        "add_key",
        "request_key",
        "perf_event_open",
        "userfaultfd",
        "init_module",
        "finit_module",
        "delete_module",
        "kexec_load",
        "kexec_file_load",
        "reboot",
        "swapon",
        "open_by_handle_at",
        "name_to_handle_at",
        "process_vm_readv",
        "process_vm_writev",
        "setuid",
        "setgid",
        "setresuid",
        "personality",
        "clone3",
        "clone",
    ] {
        assert!(
            !allowed.contains(&call.to_string()),
            "{call} must not be allowed unconditionally"
        );
    }
    // Every rule is one the runtimes understand and this test compiles.
    for rule in p["syscalls"].as_array().expect("syscalls") {
        let action = rule["action"].as_str().expect("action");
        assert!(
            ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO"].contains(&action),
            "{rule}"
        );
        for arg in rule
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert_eq!(arg["op"], "SCMP_CMP_MASKED_EQ", "{rule}");
        }
    }
    // No name twice: a second rule for a name would be ignored by some runtimes.
    let mut seen = std::collections::HashSet::new();
    for rule in p["syscalls"].as_array().expect("syscalls") {
        for n in rule["names"].as_array().expect("names") {
            assert!(seen.insert(n.as_str().expect("name")), "{n} listed twice");
        }
    }
}

/// x86_64 syscall numbers from the kernel headers (`__NR_name nr`).
#[cfg(target_arch = "x86_64")]
fn syscall_numbers() -> Option<HashMap<String, u32>> {
    let header = [
        "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        "/usr/include/asm/unistd_64.h",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())?;
    let table: HashMap<String, u32> = header
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "#define").then_some(())?;
            let name = w.next()?.strip_prefix("__NR_")?;
            Some((name.to_string(), w.next()?.parse().ok()?))
        })
        .collect();
    (table.len() > 300).then_some(table)
}

/// The profile as a classic BPF program for x86_64, as libseccomp builds it
/// for the rule kinds the profile uses: names unknown on this architecture
/// are skipped (32-bit-only calls), other architectures and x32 are refused.
#[cfg(target_arch = "x86_64")]
fn compile(p: &Value, numbers: &HashMap<String, u32>) -> Vec<libc::sock_filter> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const JSET_K: u16 = 0x45;
    const AND_K: u16 = 0x54;
    const RET_K: u16 = 0x06;
    fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }
    let errno = |rule: &Value, default: u64| -> u32 {
        let e = rule
            .get("errnoRet")
            .and_then(Value::as_u64)
            .unwrap_or(default);
        libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
    };
    let default_errno = p["defaultErrnoRet"].as_u64().unwrap_or(libc::EPERM as u64);
    let deny = errno(&Value::Null, default_errno);
    let mut prog = vec![
        op(LD_W_ABS, 0, 0, 4), // arch
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(RET_K, 0, 0, deny),
        op(LD_W_ABS, 0, 0, 0), // nr
        op(JSET_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, deny),
    ];
    for rule in p["syscalls"].as_array().expect("syscalls") {
        let ret = match rule["action"].as_str() {
            Some("SCMP_ACT_ALLOW") => libc::SECCOMP_RET_ALLOW,
            Some("SCMP_ACT_ERRNO") => errno(rule, default_errno),
            other => panic!("action {other:?} not compiled by this test"),
        };
        let args = rule
            .get("args")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        assert!(
            args.len() <= 1,
            "one argument condition per rule at most: {rule}"
        );
        for name in rule["names"].as_array().expect("names") {
            let Some(&nr) = numbers.get(name.as_str().expect("name")) else {
                continue;
            };
            match args.first() {
                None => {
                    prog.push(op(JEQ_K, 0, 1, nr));
                    prog.push(op(RET_K, 0, 0, ret));
                }
                Some(arg) => {
                    let index = arg["index"].as_u64().expect("index") as u32;
                    let mask = arg["value"].as_u64().expect("value");
                    let want = arg["valueTwo"].as_u64().unwrap_or(0);
                    // High words of the mask are zero: only the low word matters.
                    assert!(mask <= u32::MAX as u64 && want <= u32::MAX as u64, "{rule}");
                    prog.push(op(JEQ_K, 0, 4, nr));
                    prog.push(op(LD_W_ABS, 0, 0, 16 + 8 * index)); // args[index], low word
                    prog.push(op(AND_K, 0, 0, mask as u32));
                    prog.push(op(JEQ_K, 0, 1, want as u32));
                    prog.push(op(RET_K, 0, 0, ret));
                    prog.push(op(LD_W_ABS, 0, 0, 0)); // nr again for the next rules
                }
            }
        }
    }
    prog.push(op(RET_K, 0, 0, deny));
    assert!(prog.len() < 4096, "BPF programs hold 4096 instructions");
    prog
}

#[cfg(target_arch = "x86_64")]
#[test]
fn stentor_serves_under_the_shipped_profile() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let numbers = syscall_numbers();
    if !support::require(
        "kernel headers (asm/unistd_64.h)",
        numbers.is_some(),
        "apt-get install linux-libc-dev",
    ) {
        return;
    }
    let numbers = numbers.expect("checked");
    let p = profile();
    for call in [
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "read",
        "clone",
    ] {
        assert!(numbers.contains_key(call), "{call} not in the headers");
    }
    let mut filter = compile(&p, &numbers);

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stentor"));
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec; only prctl calls on a
    // program that the child's copy of this closure owns.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn under the profile");
    let pid = child.id() as i32;
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Killed by PID on every early return.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let mut said = Vec::new();
    let deadline = Instant::now() + support::STARTUP_TIMEOUT;
    let addr: std::net::SocketAddr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no startup line under the profile; stentor said:\n{}",
                said.join("\n")
            )
        });
        if line.contains("msg=\"listening\"") {
            let a = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .expect("addr=");
            break a.parse().expect("addr");
        }
        said.push(line);
    };

    let health = support::exchange(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");

    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /events?topic=sandboxed HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("subscribe");
    support::read_stream_head(&mut stream);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let publish = b"POST /publish HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 40\r\n\r\n\
        topic=sandboxed&data=hello-from-seccomp!";
    let answer = support::exchange(addr, publish);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let until = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("data: hello-from-seccomp!") {
        assert!(
            Instant::now() < until,
            "event not delivered: {:?}",
            String::from_utf8_lossy(&got)
        );
        let n = stream.read(&mut buf).expect("read stream");
        assert!(n > 0, "stream closed");
        got.extend_from_slice(&buf[..n]);
    }
    let metrics = support::scrape(addr);
    assert!(
        metrics.contains("stentor_events_published_total"),
        "{metrics}"
    );

    // SAFETY: signals our own child by its PID.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < until, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = rx.try_iter().collect();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    for line in said.iter().chain(&rest) {
        assert!(
            !line.contains("panicked") && !line.contains("level=error"),
            "{line}"
        );
    }
}

/// The control: the same compiled profile without the io_uring calls stops
/// stentor at startup, so the filter above really was in force.
#[cfg(target_arch = "x86_64")]
#[test]
fn without_its_io_uring_rule_the_profile_stops_stentor() {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let Some(numbers) = syscall_numbers() else {
        support::require(
            "kernel headers (asm/unistd_64.h)",
            false,
            "apt-get install linux-libc-dev",
        );
        return;
    };
    let mut p = profile();
    for rule in p["syscalls"].as_array_mut().expect("syscalls") {
        if let Some(names) = rule["names"].as_array_mut() {
            names.retain(|n| !n.as_str().is_some_and(|n| n.starts_with("io_uring")));
        }
    }
    let mut filter = compile(&p, &numbers);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stentor"));
    cmd.args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: as above.
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_mut_ptr(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn");
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("stentor kept running without io_uring");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("io_uring") && err.contains("seccomp"), "{err}");
}

/// `deploy/Containerfile`: multi-stage, runs as a non-root uid, exposes
/// 8080, starts stentor with the shipped config, and copies only files that
/// exist (a rename in deploy/ must not break the image silently).
#[test]
fn the_containerfile_is_multi_stage_non_root_and_copies_what_exists() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let text =
        std::fs::read_to_string(format!("{root}/deploy/Containerfile")).expect("Containerfile");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let froms = lines.iter().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage: {froms} FROM lines");
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    let uid = user.split(':').next().unwrap_or("");
    assert!(
        uid != "0" && uid != "root" && !uid.is_empty(),
        "runs as {user}"
    );
    assert!(lines.contains(&"EXPOSE 8080"), "EXPOSE 8080");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains("/etc/stentor/stentor.toml")),
        "starts with the shipped config"
    );
    for l in &lines {
        if let Some(rest) = l.strip_prefix("COPY ") {
            if rest.starts_with("--from") || rest.starts_with(". ") {
                continue;
            }
            let src = rest.split_whitespace().next().expect("COPY source");
            assert!(
                std::path::Path::new(&format!("{root}/{src}")).exists(),
                "COPY {src}: no such file in the repository"
            );
        }
    }
}
