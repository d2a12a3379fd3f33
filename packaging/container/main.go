// Command container builds the plantsync-hub container image without a
// container daemon and without pulling a base image: one layer on an empty
// base (FROM scratch) holding the static hub binary, its connector plugins,
// a CA bundle, an example config and a non-root user, written as an OCI
// image tarball (an OCI image layout in a tar). Load it with
// `podman load -i FILE`, `docker load -i FILE` (Docker ≥ 25) or
// `skopeo copy oci-archive:FILE ...`. The Dockerfile beside this file
// describes the same image for those who build with docker; -context writes
// the build context it expects.
//
//	go run ./packaging/container -stage dist/stage/hub -version V -out FILE [-context DIR]
//
// `make image` runs it on what `make package` stages.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's fixed shape. The Dockerfile says the same; a test keeps them
// in step.
const (
	// UID and GID of the hub inside the image. Numeric, so that runtimes can
	// verify runAsNonRoot without reading /etc/passwd; 65532 is the usual
	// "nonroot" id of distroless images.
	hubUID      = 65532
	hubGID      = 65532
	hubUser     = "65532:65532"
	binaryPath  = "/usr/bin/plantsync-hub"
	pluginDir   = "/usr/lib/plantsync-hub/plugins"
	configPath  = "/etc/plantsync-hub/hub.yaml"
	examplePath = "/usr/share/plantsync-hub/hub.example.yaml"
	caPath      = "/etc/ssl/certs/ca-certificates.crt"
	stateDir    = "/var/lib/plantsync-hub"
)

var (
	entrypoint   = []string{binaryPath}
	cmd          = []string{"run", "-config", configPath}
	exposedPorts = []string{"7443/tcp", "8080/tcp"}
)

// Inputs is what goes into the image.
type Inputs struct {
	Binary  string // static plantsync-hub
	Plugins string // folder of plugin binaries; may be empty or missing
	Config  string // example config, stamped with the plugins' checksums
	CA      string // CA bundle
	Passwd  string // /etc/passwd and /etc/group naming the hub user
	Group   string

	Version, Commit string
	Created         time.Time
	Arch            string
}

func main() {
	in := Inputs{}
	stage := flag.String("stage", "dist/stage/hub", "staging folder written by packaging/package.sh (binary, plugins/, hub.yaml)")
	flag.StringVar(&in.CA, "ca", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to ship (Debian's ca-certificates)")
	flag.StringVar(&in.Passwd, "passwd", "packaging/container/passwd", "the image's /etc/passwd")
	flag.StringVar(&in.Group, "group", "packaging/container/group", "the image's /etc/group")
	flag.StringVar(&in.Version, "version", "dev", "image version (label and tag)")
	flag.StringVar(&in.Commit, "commit", "unknown", "source revision (label)")
	created := flag.String("created", "", "creation time, RFC 3339 (default: $SOURCE_DATE_EPOCH, else now); also every file's mtime")
	flag.StringVar(&in.Arch, "arch", runtime.GOARCH, "architecture of the hub binary")
	out := flag.String("out", "", "OCI image tarball to write")
	ctxDir := flag.String("context", "", "also write a docker build context for packaging/container/Dockerfile here")
	dockerfile := flag.String("dockerfile", "packaging/container/Dockerfile", "Dockerfile copied into -context")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "container: -out is required")
		os.Exit(2)
	}
	in.Binary = filepath.Join(*stage, "plantsync-hub")
	in.Plugins = filepath.Join(*stage, "plugins")
	in.Config = filepath.Join(*stage, "hub.yaml")
	t, err := createdTime(*created, os.Getenv("SOURCE_DATE_EPOCH"))
	if err == nil {
		in.Created = t
		err = Build(in, *out)
	}
	if err == nil && *ctxDir != "" {
		err = WriteContext(in, *ctxDir, *dockerfile)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "container:", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s (plantsync-hub:%s, %s)\n", *out, in.Version, in.Arch)
}

func createdTime(flagValue, epoch string) (time.Time, error) {
	switch {
	case flagValue != "":
		t, err := time.Parse(time.RFC3339, flagValue)
		if err != nil {
			return time.Time{}, fmt.Errorf("-created: %w", err)
		}
		return t.UTC(), nil
	case epoch != "":
		s, err := strconv.ParseInt(epoch, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", epoch, err)
		}
		return time.Unix(s, 0).UTC(), nil
	}
	return time.Now().UTC().Truncate(time.Second), nil
}

// file is one entry of the image's only layer.
type file struct {
	name     string // absolute path in the image
	src      string // host file; "" for a directory
	mode     int64
	uid, gid int
}

// files lists the layer: every directory explicitly (a scratch image has
// none), then the files, sorted so that the layer is reproducible.
func files(in Inputs) ([]file, error) {
	fl := []file{
		{name: "/etc", mode: 0o755},
		{name: "/etc/passwd", src: in.Passwd, mode: 0o644},
		{name: "/etc/group", src: in.Group, mode: 0o644},
		{name: "/etc/ssl", mode: 0o755},
		{name: "/etc/ssl/certs", mode: 0o755},
		{name: caPath, src: in.CA, mode: 0o644},
		{name: "/etc/plantsync-hub", mode: 0o755},
		{name: configPath, src: in.Config, mode: 0o644},
		{name: "/usr", mode: 0o755},
		{name: "/usr/bin", mode: 0o755},
		{name: binaryPath, src: in.Binary, mode: 0o755},
		{name: "/usr/lib", mode: 0o755},
		{name: "/usr/lib/plantsync-hub", mode: 0o755},
		{name: pluginDir, mode: 0o755},
		{name: "/usr/share", mode: 0o755},
		{name: "/usr/share/plantsync-hub", mode: 0o755},
		{name: examplePath, src: in.Config, mode: 0o644},
		// go-plugin puts its sockets in the temp folder.
		{name: "/tmp", mode: 0o1777},
		{name: "/var", mode: 0o755},
		{name: "/var/lib", mode: 0o755},
		{name: stateDir, mode: 0o700, uid: hubUID, gid: hubGID},
	}
	entries, err := os.ReadDir(in.Plugins)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("plugins: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fl = append(fl, file{name: path.Join(pluginDir, e.Name()), src: filepath.Join(in.Plugins, e.Name()), mode: 0o755})
	}
	sort.Slice(fl, func(i, j int) bool { return fl[i].name < fl[j].name })
	return fl, nil
}

// layerTar writes the layer as an uncompressed tar, owned by root except
// the state folder, with every mtime set to created.
func layerTar(in Inputs) ([]byte, error) {
	fl, err := files(in)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range fl {
		hdr := &tar.Header{
			Name: strings.TrimPrefix(f.name, "/"), Mode: f.mode, Uid: f.uid, Gid: f.gid,
			ModTime: in.Created, Format: tar.FormatPAX,
		}
		var data []byte
		if f.src == "" {
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		} else {
			if data, err = os.ReadFile(f.src); err != nil {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Image assembles the image in memory.
func Image(in Inputs) (v1.Image, error) {
	raw, err := layerTar(in)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: in.Created},
			CreatedBy: "packaging/container: plantsync-hub " + in.Version + ", plugins, CA bundle, user " + hubUser,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = in.Arch, "linux"
	cf.Created = v1.Time{Time: in.Created}
	ports := map[string]struct{}{}
	for _, p := range exposedPorts {
		ports[p] = struct{}{}
	}
	cf.Config = v1.Config{
		User:         hubUser,
		Entrypoint:   entrypoint,
		Cmd:          cmd,
		WorkingDir:   stateDir,
		Volumes:      map[string]struct{}{stateDir: {}},
		ExposedPorts: ports,
		StopSignal:   "SIGTERM",
		Labels: map[string]string{
			"org.opencontainers.image.title":       "plantsync-hub",
			"org.opencontainers.image.description": "plantsync regional hub: agent ingest, journal, pipeline and connectors",
			"org.opencontainers.image.version":     in.Version,
			"org.opencontainers.image.revision":    in.Commit,
			"org.opencontainers.image.created":     in.Created.Format(time.RFC3339),
		},
	}
	return mutate.ConfigFile(img, cf)
}

// Build writes the OCI image tarball to out.
func Build(in Inputs, out string) error {
	img, err := Image(in)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "plantsync-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	// The reference is a bare name and tag: no registry is named, and the
	// loading side decides where the image goes.
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": "plantsync-hub:" + in.Version,
	})); err != nil {
		return fmt.Errorf("oci layout: %w", err)
	}
	return tarDir(dir, out, in.Created)
}

// tarDir archives an OCI layout folder with stable order and times.
func tarDir(dir, out string, mtime time.Time) (err error) {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	tw := tar.NewWriter(f)
	var names []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		names = append(names, p)
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(names)
	for _, p := range names {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, dir+string(filepath.Separator)))
		hdr := &tar.Header{Name: rel, ModTime: mtime, Mode: 0o644, Format: tar.FormatPAX}
		if fi.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, rel+"/", 0o755
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			continue
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}

// WriteContext writes the docker build context the Dockerfile expects:
// rootfs/ (everything but the state folder, owned by root in the image) and
// state/ (copied with --chown to the hub user).
func WriteContext(in Inputs, dir, dockerfile string) error {
	fl, err := files(in)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, f := range fl {
		target := filepath.Join(dir, "rootfs", filepath.FromSlash(f.name))
		if f.name == stateDir {
			target = filepath.Join(dir, "state")
		}
		if f.src == "" {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			// Explicit chmod: MkdirAll is subject to the umask and
			// cannot set the sticky bit of /tmp.
			if err := os.Chmod(target, fs.FileMode(f.mode&0o777)|stickyBit(f.mode)); err != nil {
				return err
			}
			continue
		}
		data, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, data, fs.FileMode(f.mode)); err != nil {
			return err
		}
		if err := os.Chmod(target, fs.FileMode(f.mode)); err != nil {
			return err
		}
	}
	df, err := os.ReadFile(dockerfile)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "Dockerfile"), df, 0o644)
}

func stickyBit(mode int64) fs.FileMode {
	if mode&0o1000 != 0 {
		return fs.ModeSticky
	}
	return 0
}
