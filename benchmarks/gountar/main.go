// SPDX-License-Identifier: Apache-2.0

// gountar unpacks gzip tar archives the way the original torcx (Go) applied a
// profile: Go's compress/gzip and archive/tar, one archive after the other,
// each entry created by path, then its times, mode and owner set by path.
// Written for the benchmarks (benchmarks/test_apply.py), not shipped.
//
//	gountar DEST_DIR NAME=ARCHIVE...
package main

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func unpack(archive, dest string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dest, filepath.Clean("/"+hdr.Name))
		mode := os.FileMode(hdr.Mode).Perm()
		switch hdr.Typeflag {
		case tar.TypeReg:
			out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
			if os.IsNotExist(err) { // the original failed here (SPEC section 8)
				if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
					out, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
				}
			}
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeDir:
			if err := os.MkdirAll(path, mode); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, path); err != nil {
				return err
			}
			if err := os.Lchown(path, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
			continue
		case tar.TypeLink:
			target := filepath.Join(dest, filepath.Clean("/"+hdr.Linkname))
			if err := os.Link(target, path); err != nil {
				return err
			}
			continue
		default:
			continue
		}
		if err := os.Chtimes(path, hdr.AccessTime, hdr.ModTime); err != nil {
			return err
		}
		if err := os.Chmod(path, mode); err != nil {
			return err
		}
		if err := os.Lchown(path, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: gountar DEST_DIR NAME=ARCHIVE...")
		os.Exit(2)
	}
	for _, arg := range os.Args[2:] {
		name, archive, ok := strings.Cut(arg, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "gountar: %s: expected NAME=ARCHIVE\n", arg)
			os.Exit(2)
		}
		dest := filepath.Join(os.Args[1], name)
		if err := os.MkdirAll(dest, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "gountar: %v\n", err)
			os.Exit(1)
		}
		if err := unpack(archive, dest); err != nil {
			fmt.Fprintf(os.Stderr, "gountar: %s: %v\n", archive, err)
			os.Exit(1)
		}
	}
}
