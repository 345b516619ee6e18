package server_test

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	v1 "github.com/karlmalone/karlmalone/gen/karlmalone/v1"
	"github.com/karlmalone/karlmalone/internal/testdb"
)

// apiServices are the generated descriptors of the four services: the truth
// the API description and reflection are checked against.
func apiServices() []protoreflect.ServiceDescriptor {
	return []protoreflect.ServiceDescriptor{
		v1.File_karlmalone_v1_member_proto.Services().ByName("MemberService"),
		v1.File_karlmalone_v1_contact_proto.Services().ByName("ContactService"),
		v1.File_karlmalone_v1_group_proto.Services().ByName("GroupService"),
		v1.File_karlmalone_v1_chat_proto.Services().ByName("ChatService"),
	}
}

func TestOpenAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	res := attDo(t, e.H1, "GET", e.URL+"/openapi.yaml", "", nil, nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/yaml" {
		t.Fatalf("/openapi.yaml: %s, %s", res.Status, res.Header.Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string `yaml:"openapi"`
		Info    struct {
			Title   string `yaml:"title"`
			Version string `yaml:"version"`
		} `yaml:"info"`
		Paths      map[string]map[string]yaml.Node `yaml:"paths"`
		Components struct {
			Schemas         map[string]yaml.Node `yaml:"schemas"`
			SecuritySchemes map[string]yaml.Node `yaml:"securitySchemes"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("parse /openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") || doc.Info.Title == "" || doc.Info.Version == "" {
		t.Fatalf("not an OpenAPI 3 document: openapi %q, info %+v", doc.OpenAPI, doc.Info)
	}
	if _, ok := doc.Components.SecuritySchemes["bearer"]; !ok {
		t.Error("no bearer security scheme")
	}

	// Every RPC of every service, and nothing that is not one.
	var want []string
	for _, s := range apiServices() {
		for i := range s.Methods().Len() {
			m := s.Methods().Get(i)
			want = append(want, "/"+string(s.FullName())+"/"+string(m.Name()))
			if _, ok := doc.Components.Schemas[string(m.Input().FullName())]; !ok {
				t.Errorf("no schema for %s", m.Input().FullName())
			}
		}
	}
	var got []string
	for path, ops := range doc.Paths {
		if strings.HasPrefix(path, "/karlmalone.") {
			got = append(got, path)
			if _, ok := ops["post"]; !ok {
				t.Errorf("%s: no POST operation", path)
			}
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("RPC paths:\n got %v\nwant %v", got, want)
	}
	for _, p := range []string{"/v1/attachments", "/v1/attachments/{id}"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("no %s", p)
		}
	}
}

// assetRef finds the URLs a page loads: scripts, stylesheets and icons.
var assetRef = regexp.MustCompile(`<(?:script[^>]*\ssrc|link[^>]*\shref)="([^"]+)"`)

func TestDocs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	page, _ := url.Parse(e.URL + "/docs")
	res := attDo(t, e.H1, "GET", page.String(), "", nil, nil)
	html, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("/docs: %s, %s", res.Status, res.Header.Get("Content-Type"))
	}
	refs := assetRef.FindAllStringSubmatch(string(html), -1)
	var scripts, styles int
	for _, m := range refs {
		u, err := page.Parse(m[1])
		if err != nil {
			t.Fatalf("asset %q: %v", m[1], err)
		}
		if u.Host != page.Host {
			t.Errorf("asset %s comes from another host", u)
			continue
		}
		res := attDo(t, e.H1, "GET", u.String(), "", nil, nil)
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || len(b) == 0 {
			t.Errorf("asset %s: %s, %d bytes", u, res.Status, len(b))
		}
		switch ct := res.Header.Get("Content-Type"); {
		case strings.HasPrefix(ct, "text/javascript"):
			scripts++
			// The initializer loads the API description: served here too.
			if spec := regexp.MustCompile(`url: "([^"]+)"`).FindStringSubmatch(string(b)); spec != nil {
				su, _ := page.Parse(spec[1])
				if su.Host != page.Host || su.Path != "/openapi.yaml" {
					t.Errorf("docs load the API description from %s", su)
				}
			}
		case strings.HasPrefix(ct, "text/css"):
			styles++
		}
	}
	if scripts < 2 || styles < 1 {
		t.Fatalf("/docs loads %d scripts and %d stylesheets; want the renderer, its starter and its styles", scripts, styles)
	}
	if res := attDo(t, e.H1, "GET", e.URL+"/docs/nothing.js", "", nil, nil); res.StatusCode != 404 {
		t.Fatalf("unknown asset: %s", res.Status)
	}
}

// dynamicClient calls procedure with messages built from method's descriptor
// alone, over gRPC, as grpcurl does.
func dynamicClient(e *env, procedure string, method protoreflect.MethodDescriptor) *connect.Client[dynamicpb.Message, dynamicpb.Message] {
	return connect.NewClient[dynamicpb.Message, dynamicpb.Message](e.H2C, e.URL+procedure,
		connect.WithGRPC(),
		connect.WithSchema(method),
		connect.WithResponseInitializer(func(spec connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(spec.Schema.(protoreflect.MethodDescriptor).Output())
			return nil
		}),
	)
}

func TestReflection(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	want := []string{grpchealth.HealthV1ServiceName}
	for _, s := range apiServices() {
		want = append(want, string(s.FullName()))
	}
	slices.Sort(want)

	stream := grpcreflect.NewClient(e.H2C, e.URL, connect.WithGRPC()).NewStream(t.Context())
	defer stream.Close()
	names, err := stream.ListServices()
	if err != nil {
		t.Fatalf("list services (v1): %v", err)
	}
	got := make([]string, len(names))
	for i, n := range names {
		got[i] = string(n)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("reflection lists %v, want %v", got, want)
	}

	// v1alpha, which older tools still speak, lists the same.
	alpha := reflectionV1Alpha(t, e)
	slices.Sort(alpha)
	if !slices.Equal(alpha, want) {
		t.Fatalf("v1alpha reflection lists %v, want %v", alpha, want)
	}

	// Register a member using nothing but descriptors fetched through
	// reflection: a registry of only what the server sent, no generated code.
	fds, err := stream.FileContainingSymbol("karlmalone.v1.MemberService")
	if err != nil {
		t.Fatalf("file containing MemberService: %v", err)
	}
	files, err := protodesc.NewFiles(&descriptorpb.FileDescriptorSet{File: fds})
	if err != nil {
		t.Fatalf("descriptors from reflection do not resolve: %v", err)
	}
	d, err := files.FindDescriptorByName("karlmalone.v1.MemberService.Register")
	if err != nil {
		t.Fatal(err)
	}
	method := d.(protoreflect.MethodDescriptor)
	req := dynamicpb.NewMessage(method.Input())
	fields := method.Input().Fields()
	phone := newPhone()
	req.Set(fields.ByName("phone"), protoreflect.ValueOfString(phone))
	req.Set(fields.ByName("password"), protoreflect.ValueOfString("correct horse battery"))
	req.Set(fields.ByName("nickname"), protoreflect.ValueOfString("reflected"))
	res, err := dynamicClient(e, "/karlmalone.v1.MemberService/Register", method).CallUnary(t.Context(), connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Register through reflection: %v", err)
	}
	member := res.Msg.Get(method.Output().Fields().ByName("member")).Message()
	nick := member.Get(member.Descriptor().Fields().ByName("nickname")).String()
	id := member.Get(member.Descriptor().Fields().ByName("id")).Int()
	if nick != "reflected" || id <= 0 {
		t.Fatalf("Register answered member %v", member)
	}
	// The member is real: it signs in with the generated client.
	if c := e.login(t, phone, "correct horse battery"); c.ID != id {
		t.Fatalf("signed in as %d, registered %d", c.ID, id)
	}
}

// reflectionV1Alpha lists services over grpc.reflection.v1alpha. Its messages
// are v1's (the two are the same on the wire), built from the descriptors
// connectrpc.com/grpcreflect registers (under a package of its own, so they
// never clash with grpc-go's).
func reflectionV1Alpha(t *testing.T, e *env) []string {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("connectext.grpc.reflection.v1.ServerReflection.ServerReflectionInfo")
	if err != nil {
		t.Fatal(err)
	}
	method := d.(protoreflect.MethodDescriptor)
	stream := dynamicClient(e, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", method).CallBidiStream(t.Context())
	req := dynamicpb.NewMessage(method.Input())
	req.Set(method.Input().Fields().ByName("list_services"), protoreflect.ValueOfString("*"))
	if err := stream.Send(req); err != nil {
		t.Fatalf("v1alpha send: %v", err)
	}
	res, err := stream.Receive()
	if err != nil {
		t.Fatalf("v1alpha receive: %v", err)
	}
	stream.CloseRequest()
	stream.CloseResponse()
	list := res.Get(method.Output().Fields().ByName("list_services_response")).Message()
	services := list.Get(list.Descriptor().Fields().ByName("service")).List()
	var names []string
	for i := range services.Len() {
		s := services.Get(i).Message()
		names = append(names, s.Get(s.Descriptor().Fields().ByName("name")).String())
	}
	return names
}

func TestGRPCHealth(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	e := newEnv(t, withPool(pool))
	health := grpchealth.NewClient(e.H2C, e.URL, connect.WithGRPC())
	for _, svc := range []string{"", "karlmalone.v1.ChatService"} {
		res, err := health.Check(t.Context(), &grpchealth.CheckRequest{Service: svc})
		if err != nil || res.Status != grpchealth.StatusServing {
			t.Fatalf("health of %q: %v, %v; want SERVING", svc, res, err)
		}
	}
	_, err := health.Check(t.Context(), &grpchealth.CheckRequest{Service: "no.such.Service"})
	wantCode(t, err, connect.CodeNotFound)
	// Over Connect with JSON, as curl would ask.
	res := attDo(t, e.H1, "POST", e.URL+"/grpc.health.v1.Health/Check", "", strings.NewReader("{}"),
		http.Header{"Content-Type": {"application/json"}})
	if b, _ := io.ReadAll(res.Body); res.StatusCode != 200 || !strings.Contains(string(b), "SERVING") {
		t.Fatalf("JSON health check: %s %s", res.Status, b)
	}

	pool.Close() // the database is gone
	res2, err := health.Check(t.Context(), &grpchealth.CheckRequest{})
	if err != nil || res2.Status != grpchealth.StatusNotServing {
		t.Fatalf("health without a database: %v, %v; want NOT_SERVING", res2, err)
	}
}
