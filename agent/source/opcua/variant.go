package opcua

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"

	pb "github.com/plantsync/plantsync/proto/plantsync/v1"
)

// maxNesting bounds how deep nested variants and data values are followed;
// a server decides how deep they go.
const maxNesting = 8

var typeNames = map[ua.TypeID]string{
	ua.TypeIDNull: "Null", ua.TypeIDBoolean: "Boolean", ua.TypeIDSByte: "SByte", ua.TypeIDByte: "Byte",
	ua.TypeIDInt16: "Int16", ua.TypeIDUint16: "UInt16", ua.TypeIDInt32: "Int32", ua.TypeIDUint32: "UInt32",
	ua.TypeIDInt64: "Int64", ua.TypeIDUint64: "UInt64", ua.TypeIDFloat: "Float", ua.TypeIDDouble: "Double",
	ua.TypeIDString: "String", ua.TypeIDDateTime: "DateTime", ua.TypeIDGUID: "Guid", ua.TypeIDByteString: "ByteString",
	ua.TypeIDXMLElement: "XmlElement", ua.TypeIDNodeID: "NodeId", ua.TypeIDExpandedNodeID: "ExpandedNodeId",
	ua.TypeIDStatusCode: "StatusCode", ua.TypeIDQualifiedName: "QualifiedName", ua.TypeIDLocalizedText: "LocalizedText",
	ua.TypeIDExtensionObject: "ExtensionObject", ua.TypeIDDataValue: "DataValue", ua.TypeIDVariant: "Variant",
	ua.TypeIDDiagnosticInfo: "DiagnosticInfo",
}

// dataTypeName names a variant's type; arrays get a [] suffix.
func dataTypeName(v *ua.Variant) string {
	if v == nil {
		return "Null"
	}
	name, ok := typeNames[v.Type()]
	if !ok {
		name = "Type" + strconv.Itoa(int(v.Type()))
	}
	if isArray(v) {
		name += "[]"
	}
	return name
}

func isArray(v *ua.Variant) bool {
	if v == nil || v.Value() == nil {
		return false
	}
	rv := reflect.ValueOf(v.Value())
	return rv.Kind() == reflect.Slice && !(v.Type() == ua.TypeIDByteString && rv.Type().Elem().Kind() == reflect.Uint8)
}

// setObservation fills obs's value from v and returns the value as text,
// the form field templates, value maps and event ids use. Scalars keep
// their type; arrays and structures travel as JSON text. It never fails:
// whatever a server sends becomes some value.
func setObservation(obs *pb.Observation, v *ua.Variant) string {
	obs.DataType = dataTypeName(v)
	if v == nil || v.Value() == nil {
		return ""
	}
	if isArray(v) {
		s := jsonText(v.Value(), 0)
		obs.Value = &pb.Observation_StringValue{StringValue: s}
		return s
	}
	s := scalarText(v.Value(), 0)
	switch x := v.Value().(type) {
	case bool:
		obs.Value = &pb.Observation_BoolValue{BoolValue: x}
	case int8:
		obs.Value = &pb.Observation_IntValue{IntValue: int64(x)}
	case int16:
		obs.Value = &pb.Observation_IntValue{IntValue: int64(x)}
	case int32:
		obs.Value = &pb.Observation_IntValue{IntValue: int64(x)}
	case int64:
		obs.Value = &pb.Observation_IntValue{IntValue: x}
	case uint8:
		obs.Value = &pb.Observation_UintValue{UintValue: uint64(x)}
	case uint16:
		obs.Value = &pb.Observation_UintValue{UintValue: uint64(x)}
	case uint32:
		obs.Value = &pb.Observation_UintValue{UintValue: uint64(x)}
	case uint64:
		obs.Value = &pb.Observation_UintValue{UintValue: x}
	case float32:
		obs.Value = &pb.Observation_DoubleValue{DoubleValue: float64(x)}
	case float64:
		obs.Value = &pb.Observation_DoubleValue{DoubleValue: x}
	case []byte:
		obs.Value = &pb.Observation_BytesValue{BytesValue: x}
	default:
		obs.Value = &pb.Observation_StringValue{StringValue: s}
	}
	return s
}

// valueText is setObservation's text without building an observation.
func valueText(v *ua.Variant) string {
	if v == nil || v.Value() == nil {
		return ""
	}
	if isArray(v) {
		return jsonText(v.Value(), 0)
	}
	return scalarText(v.Value(), 0)
}

// formatFloat writes decimals without an exponent, so a Double fills a
// Quantity ("12.5"), and keeps NaN and infinities readable.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'f', -1, bits)
}

func scalarText(x any, depth int) string {
	switch x := x.(type) {
	case nil:
		return ""
	case bool:
		return strconv.FormatBool(x)
	case int8:
		return strconv.FormatInt(int64(x), 10)
	case int16:
		return strconv.FormatInt(int64(x), 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint8:
		return strconv.FormatUint(uint64(x), 10)
	case uint16:
		return strconv.FormatUint(uint64(x), 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case float32:
		return formatFloat(float64(x), 32)
	case float64:
		return formatFloat(x, 64)
	case string:
		return sanitize(x)
	case []byte:
		return base64.StdEncoding.EncodeToString(x)
	case time.Time:
		if x.IsZero() {
			return ""
		}
		return x.UTC().Format(time.RFC3339Nano)
	case *ua.GUID:
		if x == nil {
			return ""
		}
		return sanitize(x.String())
	case ua.XMLElement:
		return sanitize(string(x))
	case *ua.NodeID:
		if x == nil {
			return ""
		}
		return sanitize(x.String())
	case *ua.ExpandedNodeID:
		if x == nil {
			return ""
		}
		return sanitize(x.String())
	case ua.StatusCode:
		return statusText(x)
	case *ua.QualifiedName:
		if x == nil {
			return ""
		}
		if x.NamespaceIndex == 0 {
			return sanitize(x.Name)
		}
		return strconv.Itoa(int(x.NamespaceIndex)) + ":" + sanitize(x.Name)
	case *ua.LocalizedText:
		if x == nil {
			return ""
		}
		return sanitize(x.Text)
	case *ua.DataValue:
		if x == nil || depth >= maxNesting {
			return ""
		}
		if x.Value == nil {
			return ""
		}
		return nestedText(x.Value, depth+1)
	case *ua.Variant:
		if x == nil || depth >= maxNesting {
			return ""
		}
		return nestedText(x, depth+1)
	case *ua.ExtensionObject:
		if x == nil || x.Value == nil {
			return ""
		}
		return jsonText(x.Value, depth+1)
	}
	return jsonText(x, depth+1)
}

func nestedText(v *ua.Variant, depth int) string {
	if v.Value() == nil {
		return ""
	}
	if isArray(v) {
		return jsonText(v.Value(), depth)
	}
	return scalarText(v.Value(), depth)
}

// jsonText renders arrays and structures. Values JSON cannot hold (NaN,
// cycles, too deep) fall back to Go's %v.
func jsonText(x any, depth int) string {
	b, err := json.Marshal(jsonValue(reflect.ValueOf(x), depth))
	if err != nil {
		return sanitize(fmt.Sprintf("%v", x))
	}
	return string(b)
}

func jsonValue(rv reflect.Value, depth int) any {
	if !rv.IsValid() {
		return nil
	}
	if depth > maxNesting {
		return "…"
	}
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}
		}
		if rv.Type().Elem().Kind() == reflect.Uint8 {
			return base64.StdEncoding.EncodeToString(rv.Bytes())
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = jsonValue(rv.Index(i), depth+1)
		}
		return out
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return formatFloat(f, 64)
		}
		return f
	case reflect.Bool:
		return rv.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if rv.Type() == reflect.TypeOf(ua.StatusCode(0)) {
			return statusText(ua.StatusCode(rv.Int()))
		}
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if rv.Type() == reflect.TypeOf(ua.StatusCode(0)) {
			return statusText(ua.StatusCode(rv.Uint()))
		}
		return rv.Uint()
	case reflect.String:
		return sanitize(rv.String())
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil
		}
		if rv.CanInterface() {
			switch rv.Interface().(type) {
			case *ua.NodeID, *ua.ExpandedNodeID, *ua.QualifiedName, *ua.LocalizedText, *ua.GUID, *ua.Variant, *ua.DataValue, *ua.ExtensionObject:
				return scalarText(rv.Interface(), depth+1)
			}
		}
		return jsonValue(rv.Elem(), depth+1)
	case reflect.Struct:
		if rv.CanInterface() {
			if t, ok := rv.Interface().(time.Time); ok {
				return scalarText(t, depth)
			}
		}
		out := map[string]any{}
		for i := 0; i < rv.NumField(); i++ {
			f := rv.Type().Field(i)
			if !f.IsExported() {
				continue
			}
			out[f.Name] = jsonValue(rv.Field(i), depth+1)
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		iter := rv.MapRange()
		for iter.Next() {
			out[sanitize(fmt.Sprint(iter.Key().Interface()))] = jsonValue(iter.Value(), depth+1)
		}
		return out
	}
	return nil
}

// statusText names a status code the way engineers read it in UaExpert.
func statusText(s ua.StatusCode) string {
	if d, ok := ua.StatusCodes[s]; ok {
		return specName(d.Name)
	}
	if d, ok := ua.StatusCodes[s&0xFFFF0000]; ok {
		return fmt.Sprintf("%s (0x%08X)", specName(d.Name), uint32(s))
	}
	return fmt.Sprintf("0x%08X", uint32(s))
}

// specName turns gopcua's "StatusBadNodeIDUnknown" into the specification's
// "BadNodeIdUnknown".
func specName(n string) string {
	return strings.ReplaceAll(strings.TrimPrefix(n, "Status"), "ID", "Id")
}

func isBad(s ua.StatusCode) bool { return uint32(s)&0x80000000 != 0 }
