package config

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// validate checks the validate tags of every field, then calls Validate on
// each struct whose fields all passed.
func (l *loader) validate(root reflect.Value) {
	l.validateStruct(root, "")
}

// validateStruct reports whether v and everything inside it are valid.
func (l *loader) validateStruct(v reflect.Value, section string) bool {
	before := len(l.errs)
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, squash, ok := fieldKey(f)
		if !ok {
			continue
		}
		fv := v.Field(i)
		if squash {
			l.validateStruct(fv, section)
			continue
		}
		key := joinKey(section, name)
		if l.failed[key] {
			continue // already reported; its rules would only repeat it
		}
		if tag, ok := f.Tag.Lookup("validate"); ok && tag != "" {
			for _, msg := range checkRules(fv, tag) {
				l.add(key+msg.sub, l.sourceOf(key), l.ruleError(key, msg.msg))
			}
		}
		l.validateNested(fv, key)
	}
	if len(l.errs) > before || l.failedUnder(section) {
		return false
	}
	return l.callValidator(v, section)
}

// failedUnder reports whether a key in section failed to decode, in which
// case the section's Validate would judge a value nobody gave.
func (l *loader) failedUnder(section string) bool {
	for key := range l.failed {
		if section == "" || strings.HasPrefix(key, section+".") {
			return true
		}
	}
	return false
}

// ruleError adds a hint on how to set a required key that nothing set.
func (l *loader) ruleError(key, msg string) error {
	if msg == msgRequired && l.sourceOf(key) == "" {
		if i, ok := l.schema.byKey[key]; ok {
			return fmt.Errorf("%s but not set; set it in a config file or with %s", msg, l.schema.leaves[i].env)
		}
	}
	return errors.New(msg)
}

// validateNested descends into sections, structs behind pointers and lists
// of structs.
func (l *loader) validateNested(v reflect.Value, key string) {
	switch v.Kind() {
	case reflect.Struct:
		if isSection(v.Type()) {
			l.validateStruct(v, key)
		}
	case reflect.Pointer:
		if !v.IsNil() {
			l.validateNested(v.Elem(), key)
		}
	case reflect.Slice, reflect.Array:
		if isSection(v.Type().Elem()) {
			for i := range v.Len() {
				l.validateStruct(v.Index(i), fmt.Sprintf("%s[%d]", key, i))
			}
		}
	}
}

// callValidator calls v's Validate method, if it has one, and makes the
// keys of the errors it returns absolute.
func (l *loader) callValidator(v reflect.Value, section string) bool {
	var val Validator
	if v.CanAddr() {
		val, _ = v.Addr().Interface().(Validator)
	}
	if val == nil {
		val, _ = v.Interface().(Validator)
	}
	if val == nil {
		return true
	}
	err := val.Validate()
	if err == nil {
		return true
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var ke *KeyError
		if errors.As(e, &ke) {
			key := section
			if ke.Key != "" {
				key = joinKey(section, ke.Key)
			}
			src := ke.Source
			if src == "" && key != section {
				src = l.sourceOf(key)
			}
			l.add(key, src, ke.Err)
			continue
		}
		l.add(section, "", e)
	}
	return false
}

const msgRequired = "a value is required"

// checkRules applies the rules of one validate tag to v.
func checkRules(v reflect.Value, tag string) []keyMessage {
	var out []keyMessage
	fail := func(sub, format string, args ...any) {
		out = append(out, keyMessage{sub: sub, msg: fmt.Sprintf(format, args...)})
	}
	// A pointer marks an optional value: required asks only that it be set.
	ptr := v.Kind() == reflect.Pointer
	isNil := ptr && v.IsNil()
	if ptr && !isNil {
		v = v.Elem()
	}
	for rule := range strings.SplitSeq(tag, ",") {
		rule = strings.TrimSpace(rule)
		name, arg, _ := strings.Cut(rule, "=")
		if name == "required" {
			if isNil {
				fail("", msgRequired)
			} else if !ptr {
				checkRequired(v, fail)
			}
			continue
		}
		if isNil {
			continue // nothing to check; "required" reports a missing value
		}
		switch name {
		case "min", "max":
			if err := checkBound(v, name, arg, fail); err != nil {
				fail("", "invalid validate tag %q: %v", tag, err)
			}
		case "oneof":
			if err := checkOneOf(v, arg, fail); err != nil {
				fail("", "invalid validate tag %q: %v", tag, err)
			}
		case "":
		default:
			fail("", "invalid validate tag %q: unknown rule %q", tag, name)
		}
	}
	return out
}

type failFunc func(sub, format string, args ...any)

func checkRequired(v reflect.Value, fail failFunc) {
	switch v.Kind() {
	case reflect.String:
		if strings.TrimSpace(v.String()) == "" {
			fail("", msgRequired)
		}
	case reflect.Slice, reflect.Map, reflect.Array:
		if v.Len() == 0 {
			fail("", msgRequired)
			return
		}
		if v.Kind() != reflect.Map && v.Type().Elem().Kind() == reflect.String {
			for i := range v.Len() {
				if strings.TrimSpace(v.Index(i).String()) == "" {
					fail(fmt.Sprintf("[%d]", i), "must not be empty")
				}
			}
		}
	default:
		if v.IsZero() {
			fail("", msgRequired)
		}
	}
}

func checkBound(v reflect.Value, rule, arg string, fail failFunc) error {
	isMin := rule == "min"
	word := "at most"
	if isMin {
		word = "at least"
	}
	if v.Type() == reflect.TypeFor[time.Duration]() {
		limit, err := time.ParseDuration(arg)
		if err != nil {
			return err
		}
		d := time.Duration(v.Int())
		if (isMin && d < limit) || (!isMin && d > limit) {
			fail("", "must be %s %s, got %s", word, limit, d)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		limit, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			return err
		}
		if n := v.Int(); (isMin && n < limit) || (!isMin && n > limit) {
			fail("", "must be %s %d, got %d", word, limit, n)
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		limit, err := strconv.ParseUint(arg, 10, 64)
		if err != nil {
			return err
		}
		if n := v.Uint(); (isMin && n < limit) || (!isMin && n > limit) {
			fail("", "must be %s %d, got %d", word, limit, n)
		}
	case reflect.Float32, reflect.Float64:
		limit, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return err
		}
		if n := v.Float(); (isMin && n < limit) || (!isMin && n > limit) {
			fail("", "must be %s %v, got %v", word, limit, n)
		}
	case reflect.String:
		limit, err := strconv.Atoi(arg)
		if err != nil {
			return err
		}
		if n := utf8.RuneCountInString(v.String()); (isMin && n < limit) || (!isMin && n > limit) {
			fail("", "must be %s %d characters long, got %d", word, limit, n)
		}
	case reflect.Slice, reflect.Map, reflect.Array:
		limit, err := strconv.Atoi(arg)
		if err != nil {
			return err
		}
		if n := v.Len(); (isMin && n < limit) || (!isMin && n > limit) {
			fail("", "must have %s %d elements, got %d", word, limit, n)
		}
	default:
		return fmt.Errorf("%s does not apply to %s", rule, v.Type())
	}
	return nil
}

func checkOneOf(v reflect.Value, arg string, fail failFunc) error {
	allowed := strings.Fields(arg)
	if len(allowed) == 0 {
		return errors.New("oneof needs at least one value")
	}
	secret := v.Type() == reflect.TypeFor[Secret]() || v.Type() == reflect.TypeFor[DSN]()
	check := func(sub, got string) {
		if slices.Contains(allowed, got) {
			return
		}
		if secret {
			fail(sub, "must be one of %s", strings.Join(allowed, ", "))
			return
		}
		fail(sub, "must be one of %s, got %q", strings.Join(allowed, ", "), got)
	}
	switch v.Kind() {
	case reflect.String:
		check("", v.String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		check("", strconv.FormatInt(v.Int(), 10))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		check("", strconv.FormatUint(v.Uint(), 10))
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("oneof does not apply to %s", v.Type())
		}
		for i := range v.Len() {
			check(fmt.Sprintf("[%d]", i), v.Index(i).String())
		}
	default:
		return fmt.Errorf("oneof does not apply to %s", v.Type())
	}
	return nil
}
