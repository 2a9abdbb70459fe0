//! Where the query log's lines go: stdout, written by a thread of its own through a bounded
//! queue, so that a slow or stuck reader of stdout never holds up the threads answering
//! queries. Past the queue's bound new lines are dropped and counted (the count is logged).
//! At exit the lines queued are written out, waiting a bounded time: a stdout nobody reads
//! delays the exit by that much, and never blocks or panics it.
//!
//! tracing-appender's non-blocking writer does the same but prints to stdout, with
//! `println!`, when its worker does not take the shutdown in time: exactly when stdout is
//! stuck, so the exit hangs or panics on a broken pipe.

use std::io::{self, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing_subscriber::fmt::MakeWriter;

enum Msg {
    Line(Vec<u8>),
    /// Write out what is queued, then say so.
    Flush(Sender<()>),
}

/// The writing end: cheap to clone, one line per `write`.
#[derive(Clone)]
pub struct QueryOutput {
    tx: Sender<Msg>,
    dropped: Arc<AtomicUsize>,
}

impl QueryOutput {
    /// Starts the thread writing to stdout, with room for `lines` queued lines.
    pub fn stdout(lines: usize) -> io::Result<QueryOutput> {
        let (tx, rx) = crossbeam_channel::bounded(lines);
        std::thread::Builder::new()
            .name("query-log".into())
            .spawn(move || write_out(&rx, io::stdout()))?;
        Ok(QueryOutput {
            tx,
            dropped: Arc::default(),
        })
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> usize {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes out the lines queued, waiting at most about `within` (twice: to queue the
    /// request, and for it to be done).
    pub fn finish(&self, within: Duration) {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.tx.send_timeout(Msg::Flush(done), within).is_ok() {
            let _ = finished.recv_timeout(within);
        }
    }
}

/// The thread: writes the lines as they come, flushing when none are waiting. Errors (a
/// closed stdout) lose the lines, silently: there is nowhere to report them.
fn write_out(rx: &Receiver<Msg>, out: impl Write) {
    let mut out = io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(line) => {
                let _ = out.write_all(&line);
                if rx.is_empty() {
                    let _ = out.flush();
                }
            }
            Msg::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
}

impl Write for QueryOutput {
    /// Queues `buf` (a whole line: tracing writes an event with one `write_all`), or
    /// counts it dropped when the queue is full.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.tx.try_send(Msg::Line(buf.to_vec())) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueryOutput {
    type Writer = QueryOutput;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that says it was called, blocks until told to go on, then passes on what
    /// it is given.
    struct Stuck {
        entered: Sender<()>,
        go: Receiver<()>,
        written: Sender<Vec<u8>>,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.go.recv();
            let _ = self.written.send(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_lines_and_never_blocks() {
        let (tx, rx) = crossbeam_channel::bounded(4);
        let (entered, stuck) = crossbeam_channel::unbounded();
        let (go, wait) = crossbeam_channel::unbounded();
        let (written, lines) = crossbeam_channel::unbounded();
        let output = QueryOutput {
            tx,
            dropped: Arc::default(),
        };
        let out = Stuck {
            entered,
            go: wait,
            written,
        };
        std::thread::spawn(move || write_out(&rx, out));
        let mut w = output.make_writer();
        w.write_all(b"first\n").unwrap();
        stuck
            .recv_timeout(Duration::from_secs(5))
            .expect("the thread writes the first line out");
        for i in 0..1000 {
            let line = format!("{i}\n");
            assert_eq!(w.write(line.as_bytes()).unwrap(), line.len());
        }
        assert_eq!(output.dropped(), 996, "4 queued, the others dropped");
        let started = std::time::Instant::now();
        output.finish(Duration::from_millis(50));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "finish waits a bounded time"
        );
        // Unstuck, the lines kept are written.
        for _ in 0..10 {
            let _ = go.send(());
        }
        let first = lines.recv_timeout(Duration::from_secs(5)).expect("written");
        assert_eq!(first, b"first\n");
        let rest = lines.recv_timeout(Duration::from_secs(5)).expect("written");
        assert_eq!(rest, b"0\n1\n2\n3\n");
    }
}
