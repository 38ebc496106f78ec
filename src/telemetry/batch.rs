//! The log's writer: lines are appended to one shared buffer by the threads
//! that log them, and a thread of its own writes the buffer out a batch at a
//! time, at most every `PAUSE`.
//!
//! Why not `tracing-appender`'s non-blocking writer: it hands each line to
//! its thread through a channel, and that thread, blocked on the channel
//! whenever it has caught up, is woken for nearly every line. At INFO (one
//! line per request) those wake-ups and the thread's small writes cost more
//! than formatting the lines. Here a logger only wakes the writer when the
//! buffer was empty and the writer asleep on it; under load the writer is
//! in its pause and nobody wakes anybody.
//!
//! Nothing is dropped: when `LIMIT` bytes are waiting, loggers wait for the
//! writer. Dropping the `Guard` writes what is waiting and stops the thread.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the writer lets lines gather after each write.
const PAUSE: Duration = Duration::from_millis(5);
/// Bytes waiting, at most, before loggers wait.
const LIMIT: usize = 4 << 20;

#[derive(Default)]
struct Waiting {
    lines: Vec<u8>,
    writer_asleep: bool,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    /// The writer waits here while there is nothing to write.
    lines_came: Condvar,
    /// Loggers wait here while `LIMIT` bytes are waiting.
    room_made: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // A logger that panicked mid-append left whole lines behind it (the
        // append is one `extend_from_slice`): keep logging.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the tracing subscriber writes lines to (`MakeWriter`).
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

/// Keeps the writer thread; dropping it writes what is waiting.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A writer to `out` and its guard.
pub fn writer(out: impl Write + Send + 'static) -> std::io::Result<(Lines, Guard)> {
    let shared = Arc::new(Shared::default());
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new().name("registrar-log".into()).spawn(move || write_out(&for_thread, out))?;
    Ok((Lines(shared.clone()), Guard { shared, thread: Some(thread) }))
}

fn write_out(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        let mut waiting = shared.lock();
        while waiting.lines.is_empty() && !waiting.closed {
            waiting.writer_asleep = true;
            waiting = shared.lines_came.wait(waiting).unwrap_or_else(|e| e.into_inner());
        }
        let closed = waiting.closed;
        std::mem::swap(&mut batch, &mut waiting.lines);
        drop(waiting);
        shared.room_made.notify_all();
        // Where the log goes cannot be told that it failed.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > LIMIT {
            batch.shrink_to(64 << 10);
        }
        if closed && shared.lock().lines.is_empty() {
            return;
        }
        std::thread::sleep(PAUSE);
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut waiting = self.0.lock();
        while waiting.lines.len() >= LIMIT && !waiting.closed {
            waiting = self.0.room_made.wait(waiting).unwrap_or_else(|e| e.into_inner());
        }
        waiting.lines.extend_from_slice(buf);
        if std::mem::take(&mut waiting.writer_asleep) {
            self.0.lines_came.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Lines {
        self.clone()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.lines_came.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every line of every thread is written, whole and in its thread's
    /// order, including those still waiting when the guard is dropped and
    /// those that had to wait for room.
    #[test]
    fn every_line_is_written_whole_and_in_order() {
        let sink = Sink::default();
        let (lines, guard) = writer(sink.clone()).unwrap();
        let long = "x".repeat(2000);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut lines = lines.clone();
                let long = long.clone();
                // 4 threads × 1,000 lines of about 2 KB: twice `LIMIT`.
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        lines.write_all(format!("{t} {i} {long}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let t: usize = parts.next().unwrap().parse().unwrap();
            let i: usize = parts.next().unwrap().parse().unwrap();
            assert_eq!((i, parts.next()), (next[t], Some(long.as_str())), "thread {t}");
            next[t] += 1;
        }
        assert_eq!(next, [1000; 4]);
    }

    /// A line logged after a quiet spell is written without waiting for
    /// another (the writer, asleep on an empty buffer, is woken).
    #[test]
    fn a_lone_line_is_written_soon() {
        let sink = Sink::default();
        let (mut lines, _guard) = writer(sink.clone()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        lines.write_all(b"alone\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"alone\n");
    }
}
