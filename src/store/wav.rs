//! Incremental 16-bit PCM WAV writing with periodic header fix-ups, and repair of a
//! file left open by a crash. We always write the canonical 44-byte header, so the data
//! chunk starts at byte 44 in files we produce.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const HEADER_LEN: u64 = 44;

fn header(sample_rate: u32, channels: u16, data_len: u32) -> [u8; 44] {
    let block_align = channels * 2;
    let byte_rate = sample_rate * block_align as u32;
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36u32.saturating_add(data_len)).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Writes interleaved i16 samples; `checkpoint` makes the file on disk a valid WAV of
/// everything written so far.
pub struct WavWriter {
    out: BufWriter<File>,
    sample_rate: u32,
    channels: u16,
    data_bytes: u64,
    bytes_at_checkpoint: u64,
}

impl WavWriter {
    pub fn create(path: &Path, sample_rate: u32, channels: u16) -> io::Result<Self> {
        let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
        file.write_all(&header(sample_rate, channels, 0))?;
        Ok(Self {
            out: BufWriter::with_capacity(16 * 1024, file),
            sample_rate,
            channels,
            data_bytes: 0,
            bytes_at_checkpoint: 0,
        })
    }

    pub fn write_samples(&mut self, samples: &[i16]) -> io::Result<()> {
        // Little-endian on every platform we build for; convert explicitly anyway.
        let mut buf = [0u8; 4096];
        for chunk in samples.chunks(buf.len() / 2) {
            for (i, s) in chunk.iter().enumerate() {
                buf[2 * i..2 * i + 2].copy_from_slice(&s.to_le_bytes());
            }
            self.out.write_all(&buf[..chunk.len() * 2])?;
        }
        self.data_bytes += samples.len() as u64 * 2;
        Ok(())
    }

    /// Hands buffered samples to the OS without touching the header (cheap).
    pub fn flush_data(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and rewrites the header sizes so that the file is a valid WAV now.
    pub fn checkpoint(&mut self, fsync: bool) -> io::Result<()> {
        self.out.flush()?;
        if self.data_bytes != self.bytes_at_checkpoint {
            let len = self.data_bytes.min(u32::MAX as u64 - 36) as u32;
            let file = self.out.get_mut();
            file.seek(SeekFrom::Start(4))?;
            file.write_all(&(36 + len).to_le_bytes())?;
            file.seek(SeekFrom::Start(40))?;
            file.write_all(&len.to_le_bytes())?;
            file.seek(SeekFrom::End(0))?;
            self.bytes_at_checkpoint = self.data_bytes;
        }
        if fsync {
            self.out.get_ref().sync_data()?;
        }
        Ok(())
    }

    /// Final checkpoint with fsync; returns the bytes of sample data written.
    pub fn finish(mut self) -> io::Result<u64> {
        self.checkpoint(true)?;
        Ok(self.data_bytes)
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    pub fn frames(&self) -> u64 {
        self.data_bytes / (2 * self.channels as u64)
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
}

/// What `repair` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepairedWav {
    pub sample_rate: u32,
    pub channels: u16,
    pub data_bytes: u64,
}

/// Fixes the header of a WAV we were writing when the process died: sizes from the
/// file length, a trailing partial sample frame cut off.
pub fn repair(path: &Path) -> io::Result<RepairedWav> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let mut h = [0u8; 44];
    let len = file.metadata()?.len();
    if len < HEADER_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "shorter than a WAV header"));
    }
    file.read_exact(&mut h)?;
    if &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" || &h[12..16] != b"fmt " || &h[36..40] != b"data" {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a WAV written by earshot"));
    }
    let channels = u16::from_le_bytes([h[22], h[23]]).max(1);
    let sample_rate = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    let frame = 2 * channels as u64;
    let data_bytes = ((len - HEADER_LEN) / frame * frame).min(u32::MAX as u64 - 36);
    file.set_len(HEADER_LEN + data_bytes)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&header(sample_rate, channels, data_bytes as u32))?;
    file.sync_data()?;
    Ok(RepairedWav { sample_rate, channels, data_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpointed_file_is_readable_mid_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let mut w = WavWriter::create(&p, 8000, 2).unwrap();
        w.write_samples(&[1, -1, 2, -2]).unwrap();
        w.checkpoint(false).unwrap();
        let r = hound::WavReader::open(&p).unwrap();
        assert_eq!(r.spec().channels, 2);
        assert_eq!(r.into_samples::<i16>().map(Result::unwrap).collect::<Vec<_>>(), vec![1, -1, 2, -2]);
        w.write_samples(&[3, -3]).unwrap();
        assert_eq!(w.finish().unwrap(), 12);
        let r = hound::WavReader::open(&p).unwrap();
        assert_eq!(r.len(), 6);
    }

    #[test]
    fn repair_recovers_data_written_after_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let mut w = WavWriter::create(&p, 16000, 2).unwrap();
        w.write_samples(&[5; 100]).unwrap();
        w.flush_data().unwrap();
        std::mem::forget(w); // as if killed: header still says 0 bytes
                             // plus half a sample frame of garbage
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);
        let r = repair(&p).unwrap();
        assert_eq!(r, RepairedWav { sample_rate: 16000, channels: 2, data_bytes: 200 });
        let reader = hound::WavReader::open(&p).unwrap();
        assert_eq!(reader.len(), 100);
    }

    #[test]
    fn repair_rejects_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.wav");
        std::fs::write(&p, b"hello").unwrap();
        assert!(repair(&p).is_err());
        std::fs::write(&p, [0u8; 100]).unwrap();
        assert!(repair(&p).is_err());
    }
}
