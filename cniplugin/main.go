// Command podnet is podnet's compiled CNI plugin: a transport between the container runtime and
// the podnet agent on the node, started once per CNI call.
//
// It forwards the CNI_* environment and stdin to the agent's unix socket, together with the open
// CNI_NETNS (SCM_RIGHTS: the plugin runs in the runtime's mount namespace, where that path
// exists; the agent never opens a path it is given), and prints what the agent answers. The agent
// validates the call and decides the output (podnet/cni/answer.py), so this program and the
// Python shim (podnet/cni/shim.py) cannot drift apart: the same conformance tests run against
// both. Only what needs no agent happens here: VERSION, the size limit of the config, an
// agentSocket that is no string or names no socket, and the errors of an agent that cannot be
// reached. The constants come from podnet/cni/spec.py, written
// into zz_spec.go when the plugin is built (scripts/build-plugin.sh). Standard library only.
package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	defaultTimeout = 120 * time.Second // one agent call; an ADD normally takes milliseconds
	connectWait    = 10 * time.Second  // a busy (full backlog) or restarting agent is waited for
	deadlineMargin = 1.0               // seconds: the agent must be done this long before we give up
	maxResponse    = 4 << 20
)

type cniError struct {
	Code    int
	Msg     string
	Details string
}

func (e *cniError) Error() string {
	if e.Details == "" {
		return e.Msg
	}
	return e.Msg + ": " + e.Details
}

// head is what the plugin reads of the config itself: where the agent is and which version to
// word a transport error in. Validation is the agent's, but for agentSocket (locateSocket).
type head struct {
	CNIVersion  interface{} `json:"cniVersion"`
	AgentSocket interface{} `json:"agentSocket"`
}

// Where the socket path came from (spec.locate_agent_socket): SocketEnv, agentSocketKey or this.
const (
	agentSocketKey = "agentSocket"
	socketDefault  = "default"
)

func main() {
	os.Exit(run())
}

func run() int {
	command := os.Getenv("CNI_COMMAND")
	stdin, err := io.ReadAll(os.Stdin)
	if err != nil {
		return fail(command, head{}, &cniError{ErrIOFailure, "failed to read stdin", err.Error()})
	}
	if command == "VERSION" {
		return version(stdin)
	}
	if len(stdin) > MaxConfig {
		return emitError(CurrentVersion, &cniError{ErrInvalidNetconf, "invalid network config",
			fmt.Sprintf("the network config is %d bytes; podnet accepts at most %d bytes", len(stdin), MaxConfig)})
	}
	h, derr := readHead(stdin)
	if derr != nil {
		return fail(command, head{}, derr)
	}
	path, source, serr := locateSocket(h)
	if serr != nil {
		return fail(command, h, serr)
	}
	env := map[string]string{}
	for _, name := range ForwardedEnv {
		if value, ok := os.LookupEnv(name); ok {
			env[name] = value
		}
	}
	timeout := defaultTimeout
	if text := os.Getenv("PODNET_CNI_TIMEOUT"); text != "" {
		if seconds, err := strconv.ParseFloat(text, 64); err == nil && seconds > 0 {
			timeout = time.Duration(seconds * float64(time.Second))
		}
	}
	request := map[string]interface{}{
		"op":       "cni",
		"env":      env,
		"stdin":    base64.StdEncoding.EncodeToString(stdin),
		"deadline": float64(time.Now().Add(timeout).UnixNano())/1e9 - deadlineMargin,
	}
	fd := -1
	if path := os.Getenv("CNI_NETNS"); path != "" {
		fd, err = syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
		if err != nil {
			fd = -1
			request["netnsError"] = fmt.Sprintf("pod network namespace %s cannot be opened: %s", path, strerror(err))
		}
	}
	answer, cerr := call(path, source, request, fd, timeout)
	if fd >= 0 {
		syscall.Close(fd)
	}
	if cerr != nil {
		return fail(command, h, cerr)
	}
	if answer.Output != nil && string(answer.Output) != "null" {
		os.Stdout.Write(append(bytes.TrimSpace(answer.Output), '\n'))
	}
	if answer.Log != "" {
		fmt.Fprintln(os.Stderr, answer.Log)
	}
	return answer.Exit
}

// version answers VERSION without the agent (runtimes ask before every ADD and DEL): stdin is
// empty or a JSON object, anything else is code 6; the answer speaks the config's cniVersion
// when it is one podnet knows, else the newest (spec.version_answer).
func version(stdin []byte) int {
	answer := CurrentVersion
	if len(bytes.TrimSpace(stdin)) > 0 {
		var config map[string]interface{}
		if json.Unmarshal(stdin, &config) != nil || config == nil {
			return emitError(CurrentVersion, &cniError{ErrDecode, "failed to decode network config from stdin",
				"stdin is not a JSON object"})
		}
		answer = known(config["cniVersion"])
	}
	emit(map[string]interface{}{"cniVersion": answer, "supportedVersions": SupportedVersions})
	return 0
}

// known is v when it is a version podnet speaks, else the newest.
func known(v interface{}) string {
	if text, ok := v.(string); ok {
		for _, supported := range SupportedVersions {
			if text == supported {
				return text
			}
		}
	}
	return CurrentVersion
}

// readHead takes the two fields the plugin needs; a config that is not a JSON object is code 6
// here already (spec.config_head). Numbers stay text, so no value is refused for its size.
func readHead(stdin []byte) (head, *cniError) {
	decoder := json.NewDecoder(bytes.NewReader(stdin))
	decoder.UseNumber()
	var config map[string]interface{}
	if err := decoder.Decode(&config); err != nil {
		detail := err.Error()
		if strings.Contains(detail, "exceeded max depth") {
			detail = "the JSON is nested too deeply" // spec.config_head's words
		}
		return head{}, &cniError{ErrDecode, "failed to decode network config from stdin", detail}
	}
	if config == nil {
		return head{}, &cniError{ErrDecode, "failed to decode network config from stdin", "stdin is not a JSON object"}
	}
	if _, err := decoder.Token(); err != io.EOF {
		return head{}, &cniError{ErrDecode, "failed to decode network config from stdin", "text after the JSON object"}
	}
	return head{CNIVersion: config["cniVersion"], AgentSocket: config["agentSocket"]}, nil
}

// locateSocket is the agent socket and where its path came from: env PODNET_AGENT_SOCKET, else
// the config's agentSocket, else the default. An agentSocket that is not a string is code 7
// naming the key, whatever the environment says (null and "" mean the key is not given).
func locateSocket(h head) (string, string, *cniError) {
	value, isString := h.AgentSocket.(string)
	if h.AgentSocket != nil && !isString {
		return "", "", &cniError{ErrInvalidNetconf, "invalid network config",
			agentSocketKey + " must be a string path to the podnet agent's unix socket, not " + jsonKind(h.AgentSocket)}
	}
	if path := os.Getenv(SocketEnv); path != "" {
		return path, SocketEnv, nil
	}
	if value != "" {
		return value, agentSocketKey, nil
	}
	return DefaultAgentSocket, socketDefault, nil
}

// jsonKind words a decoded JSON value's type as spec.json_kind does.
func jsonKind(v interface{}) string {
	switch v.(type) {
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case map[string]interface{}:
		return "an object"
	case []interface{}:
		return "an array"
	case string:
		return "a string"
	}
	return "null"
}

// socketProblem is why path cannot be the agent's socket, answered at once, or nil when a socket
// is there (spec.socket_problem, word for word). found is "" when nothing is at path.
func socketProblem(path, source, found string) *cniError {
	if found == "socket" {
		return nil
	}
	what := "does not exist"
	if found != "" {
		what = "is " + found + ", not a unix socket"
	}
	if source == agentSocketKey {
		return &cniError{ErrInvalidNetconf, "invalid network config",
			agentSocketKey + " " + path + " " + what + ": set " + agentSocketKey + " to the podnet agent's socket " +
				"(the agent's own " + agentSocketKey + " setting), or remove the key for the default " + DefaultAgentSocket}
	}
	where, hint := path, "an agent on another socket is named by "+agentSocketKey+" in the network config"
	if source == SocketEnv {
		where, hint = path+" (from "+SocketEnv+")", SocketEnv+" overrides the config's "+agentSocketKey
	}
	return &cniError{ErrTryAgainLater, "podnet agent is not reachable",
		where + " " + what + "; is the podnet agent running on this node? (" + hint + ")"}
}

// foundAt is what is at path in socketProblem's words; a path that cannot be looked at
// (permissions) counts as a socket, and connecting to it says what is wrong.
func foundAt(path string) string {
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return ""
		}
		return "socket"
	}
	switch mode := info.Mode(); {
	case mode&os.ModeSocket != 0:
		return "socket"
	case mode.IsDir():
		return "a directory"
	case mode.IsRegular():
		return "a regular file"
	}
	return "a special file"
}

type agentAnswer struct {
	Exit   int             `json:"exit"`
	Output json.RawMessage `json:"output"`
	Log    string          `json:"log"`
}

func call(path, source string, request map[string]interface{}, fd int, timeout time.Duration) (*agentAnswer, *cniError) {
	conn, cerr := connect(path, source, minDuration(timeout, connectWait))
	if cerr != nil {
		return nil, cerr
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	data, err := json.Marshal(request)
	if err != nil {
		return nil, &cniError{ErrAgentProtocol, "bad request for podnet agent", err.Error()}
	}
	data = append(data, '\n')
	if err := send(conn, data, fd); err != nil {
		return nil, &cniError{ErrTryAgainLater, "podnet agent did not answer", path + ": " + err.Error()}
	}
	line, err := readLine(conn)
	if err != nil {
		return nil, &cniError{ErrTryAgainLater, "podnet agent did not answer", path + ": " + err.Error()}
	}
	var answer agentAnswer
	if err := json.Unmarshal(line, &answer); err != nil {
		return nil, &cniError{ErrAgentProtocol, "bad answer from podnet agent", err.Error()}
	}
	if answer.Output != nil && string(answer.Output) != "null" && !json.Valid(answer.Output) {
		return nil, &cniError{ErrAgentProtocol, "bad answer from podnet agent", "output is not JSON"}
	}
	return &answer, nil
}

// connect retries a full listen backlog or an agent that is restarting (its socket refuses, or
// is being replaced), with growing pauses. When the first try fails and no socket is there at
// all, the answer comes at once.
func connect(path, source string, wait time.Duration) (*net.UnixConn, *cniError) {
	deadline := time.Now().Add(wait)
	pause := 5 * time.Millisecond
	for first := true; ; first = false {
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
		if err == nil {
			return conn, nil
		}
		if first {
			if problem := socketProblem(path, source, foundAt(path)); problem != nil {
				return nil, problem
			}
		}
		retry := errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
		if !retry || time.Now().Add(pause).After(deadline) {
			return nil, &cniError{ErrTryAgainLater, "podnet agent is not reachable",
				fmt.Sprintf("connect %s: %s; is the podnet agent running on this node?", path, strerror(err))}
		}
		time.Sleep(pause)
		pause *= 2
		if pause > 250*time.Millisecond {
			pause = 250 * time.Millisecond
		}
	}
}

// send writes the request; the descriptor rides on the first bytes (SCM_RIGHTS).
func send(conn *net.UnixConn, data []byte, fd int) error {
	if fd >= 0 {
		n, _, err := conn.WriteMsgUnix(data, syscall.UnixRights(fd), nil)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	for len(data) > 0 {
		n, err := conn.Write(data)
		if err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func readLine(conn *net.UnixConn) ([]byte, error) {
	var buf bytes.Buffer
	chunk := make([]byte, 65536)
	for buf.Len() <= maxResponse {
		n, err := conn.Read(chunk)
		buf.Write(chunk[:n])
		if i := bytes.IndexByte(buf.Bytes(), '\n'); i >= 0 {
			return buf.Bytes()[:i], nil
		}
		if err == io.EOF {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// fail reports a transport error in the config's version where that is one podnet speaks;
// STATUS says "plugin not available" (spec.transport_error).
func fail(command string, h head, e *cniError) int {
	if command == "STATUS" && e.Code == ErrTryAgainLater {
		e = &cniError{ErrPluginNotAvailable, "plugin not available", e.Details}
	}
	version := known(h.CNIVersion)
	if command == "" {
		command = "?"
	}
	emitError(version, e)
	fmt.Fprintf(os.Stderr, "podnet: %s failed: %s\n", command, e.Error())
	return 1
}

func emitError(version string, e *cniError) int {
	out := map[string]interface{}{"cniVersion": version, "code": e.Code, "msg": e.Msg}
	if e.Details != "" {
		out["details"] = e.Details
	}
	emit(out)
	return 1
}

func emit(payload interface{}) {
	data, _ := json.Marshal(payload)
	os.Stdout.Write(append(data, '\n'))
}

func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
