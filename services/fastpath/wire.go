package main

// Reading and editing serialized ModelInferRequests without decoding them, as
// the Python router does (router/wire.py): the fast path needs model_name
// (field 1), model_version (field 2) and whether a sequence_id parameter is
// present (field 4, a map entry), and may append a model_version: for a
// singular field the last occurrence on the wire wins.

import (
	"bytes"
	"errors"
)

var errMalformed = errors.New("malformed ModelInferRequest")

func readVarint(b []byte, pos int) (uint64, int, error) {
	var x uint64
	for shift := uint(0); shift < 64; shift += 7 {
		if pos >= len(b) {
			return 0, 0, errMalformed
		}
		c := b[pos]
		pos++
		x |= uint64(c&0x7f) << shift
		if c < 0x80 {
			return x, pos, nil
		}
	}
	return 0, 0, errMalformed
}

// fields calls visit(number, payload) for each length-delimited top-level
// field of msg and skips the others; an error means msg does not parse.
func fields(msg []byte, visit func(number uint64, payload []byte)) error {
	pos := 0
	for pos < len(msg) {
		key, next, err := readVarint(msg, pos)
		if err != nil {
			return err
		}
		pos = next
		switch key & 7 {
		case 0:
			_, pos, err = readVarint(msg, pos)
		case 1:
			pos += 8
		case 5:
			pos += 4
		case 2:
			var size uint64
			size, pos, err = readVarint(msg, pos)
			if err == nil && uint64(len(msg)-pos) < size {
				err = errMalformed
			}
			if err == nil {
				visit(key>>3, msg[pos:pos+int(size)])
				pos += int(size)
			}
		default:
			err = errMalformed
		}
		if err != nil {
			return err
		}
	}
	if pos != len(msg) {
		return errMalformed
	}
	return nil
}

var sequenceKey = []byte("sequence_id")

// routing returns model_name, model_version and whether the request names a
// sequence (those are pinned to one replica by the Python router's hashing).
func routing(msg []byte) (model, version string, sequence bool, err error) {
	err = fields(msg, func(number uint64, payload []byte) {
		switch number {
		case 1:
			model = string(payload)
		case 2:
			version = string(payload)
		case 4: // parameters map entry: key is its field 1
			fields(payload, func(n uint64, key []byte) {
				if n == 1 && bytes.Equal(key, sequenceKey) {
					sequence = true
				}
			})
		}
	})
	return model, version, sequence, err
}

// withVersion appends model_version = version to a serialized request.
func withVersion(msg []byte, version string) []byte {
	out := make([]byte, 0, len(msg)+len(version)+6)
	out = append(out, msg...)
	out = append(out, 0x12)
	n := uint64(len(version))
	for n >= 0x80 {
		out = append(out, byte(n)|0x80)
		n >>= 7
	}
	out = append(out, byte(n))
	return append(out, version...)
}
