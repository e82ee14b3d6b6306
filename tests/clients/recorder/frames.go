package main

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Window is one window of a recorded stream, as described in <name>.expect.json.
type Window struct {
	Version  int    `json:"version"`
	Count    uint32 `json:"count"`
	FirstSeq uint32 `json:"first_seq"`
	LastSeq  uint32 `json:"last_seq"`
	Layout   string `json:"layout"`
}

// Stream is the result of splitting a recorded client->server byte stream into frames.
type Stream struct {
	Windows []Window
	Events  []json.RawMessage
	// seen counts the data frames of the current window.
	seen uint32
	// layout pieces of the current window
	parts []string
}

// ParseStream splits a whole client->server stream into windows and events. It is a
// strict reader: any framing it does not understand is an error, and so is a stream
// that ends inside a frame or inside a window. partialOK allows the stream to end
// in the middle (used while proxying, to learn about windows seen so far).
func ParseStream(b []byte, partialOK bool) (*Stream, error) {
	s := &Stream{}
	r := bytes.NewReader(b)
	for r.Len() > 0 {
		if err := s.frame(r, false); err != nil {
			if partialOK && err == io.ErrUnexpectedEOF {
				break
			}
			return s, err
		}
	}
	if !partialOK && len(s.Windows) > 0 && s.seen != s.Windows[len(s.Windows)-1].Count {
		w := s.Windows[len(s.Windows)-1]
		return s, fmt.Errorf("stream ends inside a window: %d of %d data frames", s.seen, w.Count)
	}
	return s, nil
}

func (s *Stream) cur() (*Window, error) {
	if len(s.Windows) == 0 {
		return nil, fmt.Errorf("data frame before any window frame")
	}
	w := &s.Windows[len(s.Windows)-1]
	if s.seen >= w.Count {
		return nil, fmt.Errorf("data frame beyond the window's %d frames", w.Count)
	}
	return w, nil
}

func (s *Stream) closeLayout() {
	if len(s.Windows) > 0 {
		s.Windows[len(s.Windows)-1].Layout = compact(s.parts)
	}
}

func (s *Stream) frame(r *bytes.Reader, inCompressed bool) error {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return io.ErrUnexpectedEOF
	}
	ver := int(hdr[0] - '0')
	if hdr[0] != '1' && hdr[0] != '2' {
		return fmt.Errorf("unknown version byte 0x%02x", hdr[0])
	}
	switch hdr[1] {
	case 'W':
		if inCompressed {
			return fmt.Errorf("window frame inside a compressed frame")
		}
		n, err := u32(r)
		if err != nil {
			return err
		}
		if len(s.Windows) > 0 && s.seen != s.Windows[len(s.Windows)-1].Count {
			return fmt.Errorf("window frame after %d of %d data frames", s.seen, s.Windows[len(s.Windows)-1].Count)
		}
		s.Windows = append(s.Windows, Window{Version: ver, Count: n})
		s.seen = 0
		s.parts = []string{"W"}
		s.closeLayout()
	case 'J':
		w, err := s.cur()
		if err != nil {
			return err
		}
		seq, err := u32(r)
		if err != nil {
			return err
		}
		n, err := u32(r)
		if err != nil {
			return err
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return io.ErrUnexpectedEOF
		}
		if !json.Valid(payload) {
			return fmt.Errorf("J frame seq %d: payload is not valid JSON", seq)
		}
		s.data(w, seq, "J")
		s.Events = append(s.Events, json.RawMessage(payload))
	case 'D':
		w, err := s.cur()
		if err != nil {
			return err
		}
		seq, err := u32(r)
		if err != nil {
			return err
		}
		pairs, err := u32(r)
		if err != nil {
			return err
		}
		// keep the pairs' order in the JSON object we write
		var obj bytes.Buffer
		obj.WriteByte('{')
		for i := uint32(0); i < pairs; i++ {
			k, err := str(r)
			if err != nil {
				return err
			}
			v, err := str(r)
			if err != nil {
				return err
			}
			if i > 0 {
				obj.WriteByte(',')
			}
			kb, _ := marshal(k)
			vb, _ := marshal(v)
			obj.Write(kb)
			obj.WriteByte(':')
			obj.Write(vb)
		}
		obj.WriteByte('}')
		s.data(w, seq, "D")
		s.Events = append(s.Events, json.RawMessage(obj.Bytes()))
	case 'C':
		if inCompressed {
			return fmt.Errorf("compressed frame inside a compressed frame")
		}
		if len(s.Windows) == 0 {
			return fmt.Errorf("compressed frame before any window frame")
		}
		n, err := u32(r)
		if err != nil {
			return err
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return io.ErrUnexpectedEOF
		}
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("compressed frame: %v", err)
		}
		inflated, err := io.ReadAll(zr)
		if err != nil {
			return fmt.Errorf("compressed frame: %v", err)
		}
		s.parts = append(s.parts, "C(")
		ir := bytes.NewReader(inflated)
		for ir.Len() > 0 {
			if err := s.frame(ir, true); err != nil {
				if err == io.ErrUnexpectedEOF {
					return fmt.Errorf("compressed frame ends inside a frame")
				}
				return err
			}
		}
		s.parts = append(s.parts, ")")
		s.closeLayout()
	default:
		return fmt.Errorf("unknown frame type 0x%02x", hdr[1])
	}
	return nil
}

func (s *Stream) data(w *Window, seq uint32, kind string) {
	if s.seen == 0 {
		w.FirstSeq = seq
	}
	w.LastSeq = seq
	s.seen++
	s.parts = append(s.parts, kind)
	s.closeLayout()
}

// compact turns ["W","C(","J","J","J",")"] into "W C(J*3)".
func compact(parts []string) string {
	var out []string
	for i := 0; i < len(parts); {
		j := i
		for j < len(parts) && parts[j] == parts[i] {
			j++
		}
		p := parts[i]
		if (p == "J" || p == "D") && j-i > 1 {
			p += "*" + strconv.Itoa(j-i)
		}
		out = append(out, p)
		i = j
	}
	return strings.ReplaceAll(strings.ReplaceAll(strings.Join(out, " "), "C( ", "C("), " )", ")")
}

func u32(r *bytes.Reader) (uint32, error) {
	var b [4]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, io.ErrUnexpectedEOF
	}
	return binary.BigEndian.Uint32(b[:]), nil
}

func str(r *bytes.Reader) (string, error) {
	n, err := u32(r)
	if err != nil {
		return "", err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", io.ErrUnexpectedEOF
	}
	return string(b), nil
}
