package main

// The request fields the fast path reads, on messages encoded by hand as
// protobuf lays them out (ModelInferRequest: 1 model_name, 2 model_version,
// 3 id, 4 parameters map entries, 5 inputs, 7 raw_input_contents).

import "testing"

func field(number byte, payload string) []byte {
	return append([]byte{number<<3 | 2, byte(len(payload))}, payload...)
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestRoutingReadsNameVersionAndSequence(t *testing.T) {
	entry := string(concat(field(1, "sequence_id"), field(2, "\x08\x07"))) // int64_param 7
	msg := concat(field(1, "simple"), field(2, "3"), field(3, "req"), field(7, "raw\x00bytes"))
	model, version, sequence, err := routing(msg)
	if err != nil || model != "simple" || version != "3" || sequence {
		t.Fatalf("got %q %q %v %v", model, version, sequence, err)
	}
	_, _, sequence, err = routing(concat(msg, field(4, entry)))
	if err != nil || !sequence {
		t.Fatalf("sequence_id parameter not seen: %v %v", sequence, err)
	}
	other := string(concat(field(1, "sleep_ms"), field(2, "\x08\x07")))
	if _, _, sequence, _ = routing(concat(msg, field(4, other))); sequence {
		t.Fatal("another parameter taken for a sequence")
	}
}

func TestLastOccurrenceWinsAsInAFullParse(t *testing.T) {
	retargeted := withVersion(concat(field(1, "simple"), field(2, "production")), "2")
	model, version, _, err := routing(retargeted)
	if err != nil || model != "simple" || version != "2" {
		t.Fatalf("got %q %q %v", model, version, err)
	}
}

func TestMalformedRequestsAreRefused(t *testing.T) {
	for _, msg := range [][]byte{
		{0x0a, 0xff},                        // a length that never ends
		{0x0a, 0x05, 's'},                   // a length past the end
		{0x09, 1, 2, 3},                     // a fixed64 cut short
		{0x0b},                              // a group: not in this message
		concat(field(1, "m"), []byte{0x80}), // a key cut short
	} {
		if _, _, _, err := routing(msg); err == nil {
			t.Errorf("% x parsed", msg)
		}
	}
}

func TestWithVersionEncodesLongVersions(t *testing.T) {
	long := string(make([]byte, 200)) // a length that needs two varint bytes
	_, version, _, err := routing(withVersion(field(1, "m"), long))
	if err != nil || version != long {
		t.Fatalf("long version lost: %v", err)
	}
}
