package main

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func inputs(t *testing.T) Inputs {
	t.Helper()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("plugins/webhook", "webhook plugin")
	write("plugins/tryton", "tryton plugin")
	return Inputs{
		Binary:  write("plantsync-hub", "hub binary"),
		Plugins: filepath.Join(dir, "plugins"),
		Config:  write("hub.yaml", "grpc: {}\n"),
		CA:      write("ca.crt", "-----BEGIN CERTIFICATE-----\n"),
		Passwd:  "passwd",
		Group:   "group",
		Version: "1.2.3", Commit: "abc1234",
		Created: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC),
		Arch:    "amd64",
	}
}

// untar unpacks an archive into a fresh folder.
func untar(t *testing.T, r io.Reader) string {
	t.Helper()
	dir := t.TempDir()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuildWritesALoadableOCIArchive(t *testing.T) {
	in := inputs(t)
	out := filepath.Join(t.TempDir(), "hub.oci.tar")
	if err := Build(in, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dir := untar(t, f)

	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "plantsync-hub:1.2.3" {
		t.Fatalf("index: %+v", im.Manifests)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := img.MediaType(); mt != "application/vnd.oci.image.manifest.v1+json" {
		t.Fatalf("manifest media type %s", mt)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" || !reflect.DeepEqual(c.Entrypoint, []string{"/usr/bin/plantsync-hub"}) ||
		!reflect.DeepEqual(c.Cmd, []string{"run", "-config", "/etc/plantsync-hub/hub.yaml"}) {
		t.Fatalf("config: user %q entrypoint %q cmd %q", c.User, c.Entrypoint, c.Cmd)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || c.Labels["org.opencontainers.image.version"] != "1.2.3" {
		t.Fatalf("platform %s/%s labels %v", cf.OS, cf.Architecture, c.Labels)
	}

	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers: %d, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = strconv.FormatInt(hdr.Mode, 8) + " " + strconv.Itoa(hdr.Uid) + ":" + strconv.Itoa(hdr.Gid)
		if !hdr.ModTime.Equal(in.Created) {
			t.Errorf("%s: mtime %s, want the build time", hdr.Name, hdr.ModTime)
		}
	}
	for name, want := range map[string]string{
		"usr/bin/plantsync-hub":                    "755 0:0",
		"usr/lib/plantsync-hub/plugins/tryton":     "755 0:0",
		"usr/lib/plantsync-hub/plugins/webhook":    "755 0:0",
		"etc/ssl/certs/ca-certificates.crt":        "644 0:0",
		"etc/passwd":                               "644 0:0",
		"etc/plantsync-hub/hub.yaml":               "644 0:0",
		"usr/share/plantsync-hub/hub.example.yaml": "644 0:0",
		"var/lib/plantsync-hub/":                   "700 65532:65532",
		"tmp/":                                     "1777 0:0",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}

	// The archive names no registry: what it is called is up to the loader.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	reg := regexp.MustCompile(`docker\.io|gcr\.io|quay\.io|ghcr\.io|registry`)
	for _, p := range append(blobs, filepath.Join(dir, "index.json")) {
		data, _ := os.ReadFile(p)
		if json.Valid(data) && reg.Match(data) {
			t.Errorf("%s names a registry: %s", p, data)
		}
	}
}

func TestBuildIsReproducible(t *testing.T) {
	in := inputs(t)
	dir := t.TempDir()
	var sums [2][32]byte
	for i := range sums {
		out := filepath.Join(dir, "hub"+strconv.Itoa(i)+".tar")
		if err := Build(in, out); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		sums[i] = sha256.Sum256(data)
	}
	if sums[0] != sums[1] {
		t.Fatal("two builds from the same inputs differ")
	}
}

func TestBuildWithoutPlugins(t *testing.T) {
	in := inputs(t)
	in.Plugins = filepath.Join(t.TempDir(), "none")
	if err := Build(in, filepath.Join(t.TempDir(), "hub.tar")); err != nil {
		t.Fatalf("no plugins folder must be fine (connectors not built yet): %v", err)
	}
	in.Binary = filepath.Join(t.TempDir(), "missing")
	if err := Build(in, filepath.Join(t.TempDir(), "hub.tar")); err == nil {
		t.Fatal("a missing hub binary must fail the build")
	}
}

// TestDockerfileDescribesTheSameImage keeps the Dockerfile and the builder
// in step: user, entrypoint, command, ports, volume and folders.
func TestDockerfileDescribesTheSameImage(t *testing.T) {
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string]string{}
	var copies []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kw, rest, _ := strings.Cut(line, " ")
		if kw == "COPY" {
			copies = append(copies, rest)
			continue
		}
		got[kw] = rest
	}
	js := func(v []string) string { b, _ := json.Marshal(v); return strings.ReplaceAll(string(b), ",", ", ") }
	sort.Strings(exposedPorts)
	for kw, want := range map[string]string{
		"FROM":       "scratch",
		"USER":       hubUser,
		"WORKDIR":    stateDir,
		"VOLUME":     js([]string{stateDir}),
		"EXPOSE":     strings.Join(exposedPorts, " "),
		"ENTRYPOINT": js(entrypoint),
		"CMD":        js(cmd),
		"STOPSIGNAL": "SIGTERM",
	} {
		if got[kw] != want {
			t.Errorf("Dockerfile %s %q, builder has %q", kw, got[kw], want)
		}
	}
	if want := []string{"rootfs/ /", "--chown=" + hubUser + " state/ " + stateDir + "/"}; !reflect.DeepEqual(copies, want) {
		t.Errorf("Dockerfile COPY %q, want %q (the layout WriteContext writes)", copies, want)
	}

	// The context holds what the layer holds.
	in := inputs(t)
	ctx := filepath.Join(t.TempDir(), "ctx")
	if err := WriteContext(in, ctx, "Dockerfile"); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]fs.FileMode{
		"Dockerfile":                                  0o644,
		"rootfs/usr/bin/plantsync-hub":                0o755,
		"rootfs/usr/lib/plantsync-hub/plugins/tryton": 0o755,
		"rootfs/etc/ssl/certs/ca-certificates.crt":    0o644,
		"rootfs/tmp":                                  fs.ModeDir | fs.ModeSticky | 0o777,
		"state":                                       fs.ModeDir | 0o700,
	} {
		fi, err := os.Stat(filepath.Join(ctx, name))
		if err != nil {
			t.Errorf("context: %v", err)
			continue
		}
		if fi.Mode() != mode {
			t.Errorf("context %s: mode %s, want %s", name, fi.Mode(), mode)
		}
	}
	if _, err := os.Stat(filepath.Join(ctx, "rootfs", "var", "lib", "plantsync-hub")); err == nil {
		t.Error("the state folder must come from state/ (owned by the hub user), not rootfs/")
	}
}
