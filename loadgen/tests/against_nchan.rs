//! The loadgen's nchan template (docs/reference/loadgen.md, "Pointing it at other
//! servers") against a real nginx + nchan: the test writes its own
//! nginx.conf (loading the module explicitly, since Debian's nginx reads
//! modules-enabled only from the system config), starts nginx in the
//! foreground on free loopback ports, runs a small bounded load and stops
//! nginx by its PID.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, loadgen, n, require_program};

const INSTALL: &str = "apt-get install nginx libnginx-mod-nchan";

/// Where the package put the module: `dpkg -L libnginx-mod-nchan`, or the
/// usual path when dpkg is not there to ask.
fn nchan_module() -> Option<PathBuf> {
    let listed = Command::new("dpkg")
        .args(["-L", "libnginx-mod-nchan"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    listed
        .lines()
        .find(|l| l.ends_with("ngx_nchan_module.so"))
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/lib/nginx/modules/ngx_nchan_module.so")))
        .filter(|p| p.is_file())
}

/// nginx in the foreground (`daemon off`), stopped by its PID when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    fn start(module: &Path, sub_port: u16, pub_port: u16) -> Nginx {
        let dir = std::env::temp_dir().join(format!("loadgen-nchan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx prefix");
        let conf = format!(
            r#"load_module {module};
daemon off;
worker_processes 1;
pid nginx.pid;
error_log error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    client_body_buffer_size 64k;
    nchan_shared_memory_size 32M;
    nchan_message_buffer_length 1000;
    nchan_subscriber_timeout 0;
    server {{
        listen 127.0.0.1:{sub_port};
        location = /sub {{
            nchan_subscriber eventsource;
            nchan_channel_id $arg_id;
            nchan_subscriber_first_message newest;
        }}
        location = /ready {{ return 204; }}
    }}
    server {{
        listen 127.0.0.1:{pub_port};
        location = /pub {{
            nchan_publisher http;
            nchan_channel_id $arg_id;
        }}
        location = /ready {{ return 204; }}
    }}
}}
"#,
            module = module.display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            // Before the config is read nginx logs to its compiled-in path.
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let mut nginx = Nginx { child, dir };
        nginx.wait_ready(&[sub_port, pub_port]);
        nginx
    }

    /// Until both servers answer, or panic with nginx's error log.
    fn wait_ready(&mut self, ports: &[u16]) {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in ports {
            loop {
                let ok = std::net::TcpStream::connect(("127.0.0.1", port))
                    .and_then(|mut s| {
                        s.set_read_timeout(Some(Duration::from_secs(1)))?;
                        s.write_all(b"GET /ready HTTP/1.0\r\n\r\n")?;
                        let mut head = [0u8; 12];
                        s.read_exact(&mut head)?;
                        Ok(head.ends_with(b"204"))
                    })
                    .unwrap_or(false);
                if ok {
                    break;
                }
                let exited = self.child.try_wait().ok().flatten();
                if exited.is_some() || Instant::now() > deadline {
                    let log =
                        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                    panic!("nginx did not come up on {port} ({exited:?}):\n{log}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers (SIGKILL would orphan
        // them); it is killed after a deadline all the same.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The documented nchan template: 200 subscribers on 2 channels, 20 events
/// per second for 3 s, published as raw bodies to the publisher location on
/// its own port. Every subscriber gets every event of its channel: loss 0.
#[test]
fn nchan_template_loses_nothing() {
    if !require_program("nginx", INSTALL) {
        return;
    }
    let Some(module) = nchan_module() else {
        support::require("the nchan module (ngx_nchan_module.so)", false, INSTALL);
        return;
    };
    let (sub_port, pub_port) = (free_port(), free_port());
    let _nginx = Nginx::start(&module, sub_port, pub_port);
    let url = format!("http://127.0.0.1:{sub_port}");
    let pub_url = format!("http://127.0.0.1:{pub_port}/pub?id={{topic}}");
    let o = loadgen(&[
        "run",
        "--url",
        &url,
        "--sub-path",
        "/sub?id={topic}",
        "--pub-url",
        &pub_url,
        "--pub-body-template",
        "{data}",
        "--pub-content-type",
        "text/plain",
        // The publisher's port is not a subscriber node: nginx shares
        // channels between its servers, as nodes of a cluster do.
        "--topology",
        "cluster",
        "--subscribers",
        "200",
        "--topics",
        "2",
        "--rate",
        "20",
        "--duration-s",
        "3",
        "--drain-s",
        "5",
        "--max-loss",
        "0",
        "--min-connected",
        "1",
    ]);
    let r = &o.report;
    assert_eq!(o.code, 0, "stderr {}\nreport {r:#}", o.stderr);
    assert_eq!(n(r, "subscribers_connected"), 200, "{r:#}");
    assert_eq!(n(r, "events_accepted"), 60, "{r:#}");
    // 60 events over 2 channels of 100 subscribers each.
    assert_eq!(n(r, "deliveries_expected"), 6000, "{r:#}");
    assert_eq!(n(r, "deliveries_received"), 6000, "{r:#}");
    assert_eq!(n(r, "loss"), 0);
    assert_eq!(n(r, "duplicates"), 0);
    assert_eq!(n(r, "foreign_events"), 0);
}
