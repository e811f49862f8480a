//! The socket under a WebSocket, for the one thing actix cannot do: end a
//! connection whose client stopped reading.
//!
//! Once the kernel send buffer is full, actix-http stops polling the response body,
//! and the connection actor inside it freezes: its timers, mailbox and even `Stop`
//! wait for a socket that never drains (see `shared/notes/slow-consumers.md`). Two
//! things still work, both at the socket:
//! - `TCP_USER_TIMEOUT` on every accepted socket: the kernel drops a connection whose
//!   sent data stays unacknowledged that long;
//! - a watchdog per worker thread that cuts (`SO_LINGER(0)` + `shutdown`) the socket
//!   of a connection that overflowed its outbound budget or stopped making progress.
//!
//! The fd is kept in an `Rc` in the connection's extensions (dropped with the
//! connection, on this thread); the watchdog only holds a `Weak`, so it never touches
//! an fd number that has been reused.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::Extensions;
use tracing::info;

use crate::outbound::Budget;

/// How often the watchdog wakes; each wake looks at one `SLICES`-th of the
/// connections, so every connection is looked at once a second and no wake-up holds
/// the worker thread for long.
const WATCH_EVERY: Duration = Duration::from_millis(100);
const SLICES: usize = 10;
/// After an overflow, how long the connection gets to send its 4011 and close by itself.
const OVERFLOW_GRACE: Duration = Duration::from_secs(2);

/// The raw fd of an accepted socket, valid while this value lives.
#[derive(Debug)]
pub struct SocketFd(RawFd);

/// `HttpServer::on_connect`: socket options, and the fd for the watchdog.
pub fn on_connect(
    user_timeout: Duration,
    send_buffer: usize,
) -> impl Fn(&dyn Any, &mut Extensions) + Send + Sync + Clone + 'static {
    move |conn, ext| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let sock = socket2::SockRef::from(tcp);
            let _ = sock.set_tcp_user_timeout(Some(user_timeout));
            if send_buffer > 0 {
                let _ = sock.set_send_buffer_size(send_buffer);
            }
            let _ = tcp.set_nodelay(true);
            ext.insert(Rc::new(SocketFd(tcp.as_raw_fd())));
        }
    }
}

/// What the watchdog knows of one connection.
pub struct Watched {
    fd: Weak<SocketFd>,
    budget: Arc<Budget>,
    /// Last time the connection actor ran its heartbeat (it does not while frozen).
    progress: Cell<Instant>,
    overflowed_at: Cell<Option<Instant>>,
    /// No progress for this long: the connection is frozen.
    stall: Duration,
    /// Bytes the peer had acknowledged at the last look, and since when data has been
    /// waiting with no new acknowledgement.
    acked: Cell<(u64, Option<Instant>)>,
    /// The socket took nothing for this long while data waited: the client stopped reading.
    write_stall: Duration,
}

impl Watched {
    /// The actor is alive and running.
    pub fn progressed(&self) {
        self.progress.set(Instant::now());
    }
}

thread_local! {
    /// The connections of this worker thread.
    static WATCHLIST: RefCell<Option<Vec<Rc<Watched>>>> = const { RefCell::new(None) };
}

/// Watch a connection; the returned handle is stamped by the actor.
pub fn watch(fd: &Rc<SocketFd>, budget: Arc<Budget>, stall: Duration, write_stall: Duration) -> Rc<Watched> {
    let watched = Rc::new(Watched {
        fd: Rc::downgrade(fd),
        budget,
        progress: Cell::new(Instant::now()),
        overflowed_at: Cell::new(None),
        stall,
        acked: Cell::new((0, None)),
        write_stall,
    });
    WATCHLIST.with(|list| {
        let mut list = list.borrow_mut();
        if list.is_none() {
            actix_web::rt::spawn(patrol());
        }
        list.get_or_insert_with(Vec::new).push(watched.clone());
    });
    watched
}

async fn patrol() {
    let mut tick = actix_web::rt::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut slice = 0usize;
    loop {
        tick.tick().await;
        slice = (slice + 1) % SLICES;
        WATCHLIST.with(|list| {
            let mut list = list.borrow_mut();
            let Some(list) = list.as_mut() else { return };
            let now = Instant::now();
            let mut index = 0usize;
            list.retain(|w| {
                index += 1;
                if index % SLICES != slice {
                    return true;
                }
                let Some(fd) = w.fd.upgrade() else { return false };
                let overflowed = w.budget.overflowed();
                if overflowed && w.overflowed_at.get().is_none() {
                    w.overflowed_at.set(Some(now));
                }
                let overflow_expired = w.overflowed_at.get().is_some_and(|at| now.duration_since(at) >= OVERFLOW_GRACE);
                let frozen = now.duration_since(w.progress.get()) > w.stall;
                let (acked, unsent) = send_progress(&fd);
                let (before, since) = w.acked.get();
                let since = match since {
                    _ if unsent == 0 => None,
                    Some(t) if acked == before => Some(t),
                    _ => Some(now),
                };
                w.acked.set((acked, since));
                let not_reading = since.is_some_and(|t| now.duration_since(t) > w.write_stall);
                if overflow_expired || frozen || not_reading {
                    info!(
                        pending_bytes = w.budget.pending(),
                        unsent_bytes = unsent,
                        overflowed,
                        frozen,
                        not_reading,
                        "cutting a connection that stopped reading"
                    );
                    cut(&fd);
                    return false;
                }
                true
            });
        });
    }
}

/// Bytes the peer has acknowledged so far (`TCP_INFO`), and bytes in the send queue
/// still waiting for acknowledgement (`SIOCOUTQ`). Zeros when the kernel will not say.
#[allow(unsafe_code)]
fn send_progress(fd: &SocketFd) -> (u64, usize) {
    let mut unsent: libc::c_int = 0;
    // SAFETY: `fd` is open (see `cut`); TIOCOUTQ writes one c_int through the pointer.
    let rc = unsafe { libc::ioctl(fd.0, libc::TIOCOUTQ, &mut unsent) };
    let unsent = if rc == 0 { unsent.max(0) as usize } else { 0 };
    if unsent == 0 {
        // Nothing waiting: progress does not matter (one syscall for most connections).
        return (0, 0);
    }
    // SAFETY: an all-zero `tcp_info` is a valid value (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` and `len` describe a writable buffer of `len` bytes; the kernel
    // writes at most that much and updates `len`.
    let rc = unsafe {
        libc::getsockopt(fd.0, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    };
    let acked = if rc == 0 { info.tcpi_bytes_acked } else { 0 };
    (acked, unsent)
}

/// Reset the connection: no lingering FIN-WAIT socket holding unsent data.
#[allow(unsafe_code)]
fn cut(fd: &SocketFd) {
    // SAFETY: `fd` is borrowed from a live `SocketFd`, which lives exactly as long as
    // the connection that owns the socket, on this same thread; so the descriptor is
    // open and still the connection's.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.0) };
    let sock = socket2::SockRef::from(&borrowed);
    let _ = sock.set_linger(Some(Duration::ZERO));
    let _ = sock.shutdown(std::net::Shutdown::Both);
}
