package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// detachKey is Ctrl-], virsh console's escape character.
const detachKey = 0x1d

func (a *app) guestConsoleCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to a QEMU guest's serial console, like virsh console (Ctrl-] detaches)",
		Long: `Attach to the serial console of a QEMU guest: what you type goes to the guest's
first serial port, what it writes there is printed. Ctrl-] detaches, as in virsh
console. Any server relays it to the guest's node; the token needs guest:write.
One session may be attached to a guest at a time: a second attach is refused
unless it gives --force, which takes the console over (the first session ends).
The guest's log (guest logs) keeps everything the console printed, attached or
not. A session carries at most the servers' --max-body of typed input (1 MiB by
default); attach again for more.`,
		Example: "  corral guest console vm1\n  corral guest console vm1 --force",
		Args:    oneName,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := guestName(args)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			if f, ok := in.(*os.File); ok {
				if restore, err := rawTerminal(f); err == nil {
					defer restore()
				}
			}
			fmt.Fprintf(a.stderr, "Connected to guest %s\r\nEscape character is ^] (Ctrl + ])\r\n", name)
			err = c.Console(cmd.Context(), name, force, untilDetach{r: in}, a.stdout)
			fmt.Fprintf(a.stderr, "\r\n")
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "take the console over from a session attached to it")
	return cmd
}

// untilDetach reads r until the detach key, which ends it (io.EOF).
type untilDetach struct{ r io.Reader }

func (u untilDetach) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	if i := bytes.IndexByte(p[:n], detachKey); i >= 0 {
		return i, io.EOF
	}
	return n, err
}

// rawTerminal puts a terminal into raw mode, so that keys (Ctrl-C
// included) go to the guest as typed, and returns how to restore it. It
// fails for anything that is not a terminal, which is then read as is.
func rawTerminal(f *os.File) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, err
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
