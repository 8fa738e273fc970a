package fuzz

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	batchv1 "k8s.io/api/batch/v1"
)

// TestFuzzJobManifest decodes deploy/k8s/fuzz-job.yaml strictly as a
// batch/v1 Job (an unknown or misspelt field fails) and checks that its
// pods run the shards of one campaign: Indexed completion, one shard per
// completion index, each writing its summary where `fuzz merge` reads it.
func TestFuzzJobManifest(t *testing.T) {
	raw, err := os.ReadFile("../deploy/k8s/fuzz-job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var job batchv1.Job
	if err := dec.Decode(&job); err != nil {
		t.Fatalf("not a strict batch/v1 Job: %v", err)
	}
	if job.APIVersion != "batch/v1" || job.Kind != "Job" {
		t.Fatalf("apiVersion/kind %s/%s", job.APIVersion, job.Kind)
	}
	spec := job.Spec
	if spec.CompletionMode == nil || *spec.CompletionMode != batchv1.IndexedCompletion {
		t.Fatalf("completionMode %v, want Indexed", spec.CompletionMode)
	}
	if spec.Completions == nil || *spec.Completions < 1 {
		t.Fatal("completions not set")
	}
	pod := spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	script := strings.Join(append(append([]string{}, c.Command...), c.Args...), " ")
	m := regexp.MustCompile(`--shard \$\{JOB_COMPLETION_INDEX\}/(\d+)`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no --shard ${JOB_COMPLETION_INDEX}/N in %q", script)
	}
	if n, _ := strconv.Atoi(m[1]); int32(n) != *spec.Completions {
		t.Fatalf("--shard .../%d but completions %d: shards would be missed or run twice", n, *spec.Completions)
	}
	for _, want := range []string{"--out /results/shard-${JOB_COMPLETION_INDEX}", "--json", "> /results/shard-${JOB_COMPLETION_INDEX}/" + SummaryFile} {
		if !strings.Contains(script, want) {
			t.Errorf("the pod's command lacks %q: %q", want, script)
		}
	}
	mounted := false
	for _, vm := range c.VolumeMounts {
		mounted = mounted || vm.MountPath == "/results"
	}
	if !mounted || len(pod.Volumes) != 1 || pod.Volumes[0].Name != c.VolumeMounts[0].Name {
		t.Errorf("/results is not a mounted volume: %+v %+v", c.VolumeMounts, pod.Volumes)
	}
	if pod.RestartPolicy != "Never" {
		t.Errorf("restartPolicy %q: an Indexed Job's retried pod must rerun its own shard, so Never", pod.RestartPolicy)
	}
}
