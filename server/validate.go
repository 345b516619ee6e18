package server

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"github.com/go-playground/validator/v10"
)

// validate is shared by every handler: validator caches struct metadata.
var validate = newValidator()

func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	// Report the API's field names (the `name` tag), not Go's.
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		if n := f.Tag.Get("name"); n != "" {
			return n
		}
		return f.Name
	})
	// "text" goes on every string field of every request (params structs in
	// this package; TestEveryStringFieldIsText keeps it so). PostgreSQL text
	// cannot hold U+0000 and refuses invalid UTF-8: both are caught here,
	// named by field, instead of failing in the statement.
	if err := v.RegisterValidation("text", isText); err != nil {
		panic(err)
	}
	return v
}

// isText is the "text" tag: valid UTF-8 without NUL characters. Pointers
// are followed by the validator; a nil pointer is left to omitnil.
func isText(fl validator.FieldLevel) bool {
	s := fl.Field().String()
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// check validates a params struct (tags `validate` and `name`) and turns every
// violation into one InvalidArgument error that names each bad field.
func check(params any) error {
	err := validate.Struct(params)
	if err == nil {
		return nil
	}
	var verrs validator.ValidationErrors
	if !errors.As(err, &verrs) {
		return fmt.Errorf("validate: %w", err)
	}
	msgs := make([]string, 0, len(verrs))
	for _, fe := range verrs {
		msgs = append(msgs, fe.Field()+": "+describe(fe))
	}
	return connect.NewError(connect.CodeInvalidArgument, errors.New(strings.Join(msgs, "; ")))
}

// invalid is an InvalidArgument error for checks the tags cannot express.
func invalid(format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf(format, args...))
}

func describe(fe validator.FieldError) string {
	switch fe.Tag() {
	case "required":
		return "is required"
	case "e164", "startswith":
		return "must be a phone number in E.164 form, like +14155550100"
	case "min":
		if fe.Kind() == reflect.String {
			return "must be at least " + fe.Param() + " characters"
		}
		return "must be at least " + fe.Param()
	case "max":
		if fe.Kind() == reflect.String {
			return "must be at most " + fe.Param() + " characters"
		}
		if fe.Kind() == reflect.Slice {
			return "must have at most " + fe.Param() + " items"
		}
		return "must be at most " + fe.Param()
	case "gt":
		return "must be greater than " + fe.Param()
	case "http_url":
		return "must be an http or https URL"
	case "oneof":
		return "must be one of " + fe.Param()
	case "text":
		return "must be valid UTF-8 without NUL characters"
	case "printascii":
		return "must be printable ASCII"
	case "nefield":
		return "must differ from " + fe.Param()
	case "dive", "unique":
		return "must not repeat an item"
	default:
		return "is invalid (" + fe.Tag() + ")"
	}
}
