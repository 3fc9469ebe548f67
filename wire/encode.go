package wire

import (
	"encoding/binary"
	"strconv"
)

// AppendHeader appends a response header announcing a payload of size bytes.
func AppendHeader(dst []byte, t Type, size int) []byte {
	dst = append(dst, 0, 'R', 'E', 'S')
	dst = binary.BigEndian.AppendUint32(dst, uint32(t))
	return binary.BigEndian.AppendUint32(dst, uint32(size))
}

// AppendResponse appends a whole response packet whose fields are args,
// NUL-separated. It writes header and payload in one pass and does not
// allocate when dst has room.
func AppendResponse(dst []byte, t Type, args ...[]byte) []byte {
	size := 0
	for _, a := range args {
		size += len(a)
	}
	if len(args) > 1 {
		size += len(args) - 1
	}
	dst = AppendHeader(dst, t, size)
	for i, a := range args {
		if i > 0 {
			dst = append(dst, 0)
		}
		dst = append(dst, a...)
	}
	return dst
}

// AppendRequest is AppendResponse with the request magic, for clients and
// tests.
func AppendRequest(dst []byte, t Type, args ...[]byte) []byte {
	start := len(dst)
	dst = AppendResponse(dst, t, args...)
	dst[start+3] = 'Q'
	return dst
}

// AppendError appends an ERROR packet.
func AppendError(dst []byte, code, text string) []byte {
	dst = AppendHeader(dst, Error, len(code)+1+len(text))
	dst = append(dst, code...)
	dst = append(dst, 0)
	return append(dst, text...)
}

// AppendStatusRes appends a STATUS_RES packet (GET_STATUS reply).
func AppendStatusRes(dst []byte, handle []byte, known, running bool, num, den []byte) []byte {
	return AppendResponse(dst, StatusRes, handle, boolDigit(known), boolDigit(running), num, den)
}

// AppendStatusResUnique appends a STATUS_RES_UNIQUE packet.
func AppendStatusResUnique(dst []byte, unique []byte, known, running bool, num, den []byte, clients int) []byte {
	var n [20]byte
	return AppendResponse(dst, StatusResUnique, unique, boolDigit(known), boolDigit(running), num, den,
		strconv.AppendInt(n[:0], int64(clients), 10))
}

var (
	digit0 = []byte{'0'}
	digit1 = []byte{'1'}
)

func boolDigit(b bool) []byte {
	if b {
		return digit1
	}
	return digit0
}
