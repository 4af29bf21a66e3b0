package rpc

import (
	"errors"
	"fmt"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonCodec reads and writes JSON messages as connect-go's own codec does,
// but for one thing: an enum value named in a way the contract does not
// know is an error, InvalidArgument. connect-go drops it with the unknown
// fields, so a misspelt filter (USER_STATUS_DISABLD) became no filter at
// all and matched everything. Unknown fields are still dropped, so that
// clients and services need not share one version of the contracts.
type jsonCodec struct{ name string }

// jsonCodecs replace connect-go's JSON codecs, under both names it
// registers them by.
func jsonCodecs() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(jsonCodec{name: "json"}),
		connect.WithCodec(jsonCodec{name: "json; charset=utf-8"}),
	}
}

func (c jsonCodec) Name() string { return c.name }

func (c jsonCodec) IsBinary() bool { return false }

func (c jsonCodec) Marshal(message any) ([]byte, error) {
	return c.MarshalAppend(nil, message)
}

func (c jsonCodec) MarshalAppend(dst []byte, message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", message)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

func (c jsonCodec) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", message)
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	err := protojson.Unmarshal(data, m)
	if err != nil && unknownField(err) {
		// A field of a newer contract: read the message again without
		// it. An enum name misspelt in the same message then goes
		// unnoticed, as before; one alone does not.
		proto.Reset(m)
		err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
	}
	if err != nil {
		return fmt.Errorf("unmarshal into %T: %w", message, err)
	}
	return nil
}

// unknownField reports whether protojson refused a message for a field
// the message does not have. protojson's errors have no type to tell them
// apart by; TestJSONCodec pins the wording.
func unknownField(err error) bool {
	// "proto: (line 1:2): unknown field "x"": the first "): " ends the
	// position, and what follows is the reason, not a value quoted in it.
	_, reason, ok := strings.Cut(err.Error(), "): ")
	return ok && strings.HasPrefix(reason, "unknown field ")
}
