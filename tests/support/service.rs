//! A Kubernetes Service in front of lumberd replicas, for the rebalancing tests: a TCP
//! relay that hands each new connection to the next backend in turn, as kube-proxy
//! (IPVS round robin, or iptables at random) does; the clients only know its address.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// Each accepted connection is relayed to the next backend in turn; FINs are passed on,
/// so a graceful close stays graceful end to end.
pub struct Service {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Service {
    pub fn start(backends: Vec<SocketAddr>) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let backends = Arc::new(Mutex::new(backends));
        let list = backends.clone();
        thread::spawn(move || {
            let mut next = 0usize;
            for client in listener.incoming().flatten() {
                let backend = {
                    let list = list.lock().unwrap();
                    next += 1;
                    list[next % list.len()]
                };
                let Ok(upstream) = TcpStream::connect(backend) else {
                    continue; // the client sees a close and reconnects
                };
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                thread::spawn(move || pipe(client, upstream));
                thread::spawn(move || pipe(u2, c2));
            }
        });
        Service { addr, backends }
    }

    /// A new replica became ready: the Service starts sending connections to it.
    pub fn add(&self, backend: SocketAddr) {
        self.backends.lock().unwrap().push(backend);
    }
}

/// Copies `from` to `to`; at `from`'s end of stream, half-closes `to` (passes the FIN on);
/// on an error, closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) if to.write_all(&buf[..n]).is_ok() => {}
            _ => {
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}
