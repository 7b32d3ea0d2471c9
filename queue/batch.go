package queue

// The log's layout: one Badger entry per group commit, holding the
// records of every message that commit stored. On an SD card the bytes
// that reach the flash are the wear. A message is written to Badger's
// memtable log (or, for a commit at or over the value threshold, to the
// value log) once; what Badger's compactions rewrite afterwards is one
// small key per commit, or a small commit's records, not one key per
// message. A commit's messages are acknowledged, deleted and expired
// together, so nothing is lost by keeping them together.
//
// The key names the batch's last sequence number first, so that seeking
// to a sequence number lands on the batch that holds it:
//
//	'b' last(8) first(8) newest-arrival-unix-nanos(8) value-size(4)  (big-endian)
//
// so that deleting, expiring and budgeting read keys only.
//
// The value is the batch's records in sequence order, each prefixed by
// its length (uvarint); see encodeMessage for a record.

import (
	"encoding/binary"
	"fmt"
	"time"
)

const batchKeyLen = 1 + 8 + 8 + 8 + 4

// batchKey is the key of the batch of messages first..last whose value
// is size bytes.
func batchKey(first, last uint64, newest time.Time, size int) []byte {
	k := make([]byte, 1, batchKeyLen)
	k[0] = prefixBatch
	k = binary.BigEndian.AppendUint64(k, last)
	k = binary.BigEndian.AppendUint64(k, first)
	k = binary.BigEndian.AppendUint64(k, uint64(newest.UnixNano()))
	return binary.BigEndian.AppendUint32(k, uint32(size))
}

// seekKey is where to seek for the batch holding seq (or the first after).
func seekKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixBatch}, seq)
}

// batchMeta is what a batch's key says of it.
type batchMeta struct {
	first, last uint64
	newest      time.Time // arrival of its youngest message
	size        int64     // key and value: what it counts against MaxBytes
}

func parseBatchKey(k []byte) (batchMeta, error) {
	if len(k) != batchKeyLen || k[0] != prefixBatch {
		return batchMeta{}, fmt.Errorf("%w: batch key %x", errCorrupt, k)
	}
	b := batchMeta{
		last:   binary.BigEndian.Uint64(k[1:]),
		first:  binary.BigEndian.Uint64(k[9:]),
		newest: time.Unix(0, int64(binary.BigEndian.Uint64(k[17:]))),
		size:   batchKeyLen + int64(binary.BigEndian.Uint32(k[25:])),
	}
	if b.first > b.last {
		return batchMeta{}, fmt.Errorf("%w: batch key %x", errCorrupt, k)
	}
	return b, nil
}

// appendRecord adds one record to a batch value.
func appendRecord(dst, rec []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(rec)))
	return append(dst, rec...)
}

// framedSize is what a record takes in a batch value.
func framedSize(rec []byte) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(len(rec))) + len(rec)
}

// eachRecord calls fn with the sequence number and record of each message
// in the batch value val, in order, until fn returns false. A value that
// does not hold exactly the key's messages is corrupt.
func eachRecord(b batchMeta, val []byte, fn func(seq uint64, rec []byte) bool) error {
	seq := b.first
	for len(val) > 0 {
		n, w := binary.Uvarint(val)
		if w <= 0 || n > uint64(len(val)-w) || seq > b.last {
			return fmt.Errorf("%w: batch %d..%d at seq %d", errCorrupt, b.first, b.last, seq)
		}
		if !fn(seq, val[w:w+int(n)]) {
			return nil
		}
		val = val[w+int(n):]
		seq++
	}
	if seq != b.last+1 {
		return fmt.Errorf("%w: batch %d..%d holds %d records", errCorrupt, b.first, b.last, seq-b.first)
	}
	return nil
}
