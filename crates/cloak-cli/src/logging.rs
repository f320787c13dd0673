//! Log output: lines go to stderr; a long-running manager hands them to a writer thread so that
//! no request waits on stderr (a pipe to journald, a terminal, a container runtime).
//!
//! The channel is bounded: when the writer falls behind, loggers wait (no line is dropped).
//! Lines keep their order; the writer writes what is queued every 10 ms, and [`flush`] waits
//! until everything sent before it is written (called before the process exits).

use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError};
use std::sync::OnceLock;
use std::time::Duration;

/// Lines queued at most before loggers wait for the writer.
const QUEUE: usize = 16_384;

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

static QUEUE_TX: OnceLock<SyncSender<Msg>> = OnceLock::new();

/// Starts the writer thread; answers the `MakeWriter` for the subscriber.
pub fn background() -> std::io::Result<Background> {
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(rx, &mut std::io::stderr()))?;
    let _ = QUEUE_TX.set(tx.clone());
    Ok(Background(tx))
}

/// How often the writer looks for lines. It polls rather than sleeping in `recv`: waking it
/// for each line (a futex call by every logger) cost a request more than formatting its line.
const POLL: Duration = Duration::from_millis(10);

fn write_lines(rx: Receiver<Msg>, out: &mut dyn Write) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let mut acks = Vec::new();
        let mut more = false;
        let mut gone = false;
        loop {
            if buf.len() >= 1 << 20 {
                more = true;
                break;
            }
            match rx.try_recv() {
                Ok(Msg::Line(l)) => buf.extend_from_slice(&l),
                Ok(Msg::Flush(ack)) => acks.push(ack),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        // stderr is unbuffered: one write for the whole batch. A failed write (stderr closed)
        // cannot be reported anywhere; the lines are dropped, the loggers never block on it.
        if !buf.is_empty() {
            let _ = out.write_all(&buf).and_then(|()| out.flush());
            buf.clear();
        }
        for a in acks {
            let _ = a.send(());
        }
        if gone {
            return;
        }
        if !more {
            std::thread::sleep(POLL);
        }
    }
}

/// Waits (at most 5 s) until every line logged before the call is written.
pub fn flush() {
    let Some(tx) = QUEUE_TX.get() else { return };
    let (ack_tx, ack_rx) = sync_channel(1);
    if tx.send(Msg::Flush(ack_tx)).is_ok() {
        let _ = ack_rx.recv_timeout(Duration::from_secs(5));
    }
}

/// The subscriber's writer: each event's formatted line, queued whole.
#[derive(Clone)]
pub struct Background(SyncSender<Msg>);

/// One event's writer.
pub struct LineWriter<'a>(&'a SyncSender<Msg>);

impl Write for LineWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(Msg::Line(b.to_vec()))
            .map_err(|_| std::io::Error::other("the log writer has stopped"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Background {
    type Writer = LineWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_a_flush_waits_for_them() {
        let (tx, rx) = sync_channel(4);
        let sink = Sink::default();
        let mut out = sink.clone();
        let writer = std::thread::spawn(move || write_lines(rx, &mut out));
        let w = Background(tx.clone());
        let loggers: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    use tracing_subscriber::fmt::MakeWriter;
                    for i in 0..500 {
                        // As the subscriber does: the event formatted first, written once.
                        let line = format!("{t} {i}\n");
                        w.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for l in loggers {
            l.join().unwrap();
        }
        let (ack_tx, ack_rx) = sync_channel(1);
        tx.send(Msg::Flush(ack_tx)).unwrap();
        ack_rx.recv().unwrap();
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2000, "no line lost through a queue of 4");
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|i| i.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "logger {t} in order");
        }
        drop((w, tx));
        writer.join().unwrap();
    }
}
