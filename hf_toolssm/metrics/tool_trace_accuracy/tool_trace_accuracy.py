"""tool_trace_accuracy: the paper's exact-match metrics for tool-using decodes, as an `evaluate` module.

Load it offline with ``hf_toolssm.metrics.load_tool_trace_accuracy()`` (or ``evaluate.load(<this folder>)``).

Inputs, one entry per decoded instance:
    predicted_traces / reference_traces: the trace after the prompt as a list of token strings
        (thoughts, commands, observations, outputs);
    answers_correct: whether the task's checker accepted the final answer;
    token_accuracies: teacher-forced next-token accuracy on the reference trace's model tokens (None where
        it was not measured);
    final_states_correct (optional keyword, a list): whether the tools as the decode left them solve the
        instance, for tasks that change the world through their tools (coding: the sandbox's files pass).
Outputs (fractions in [0, 1]):
    answer_exact_match: share of instances whose final answer is correct;
    trace_exact_match: share whose whole trace equals the reference (the paper's strict metric:
        the model executed the intended algorithm exactly) AND whose answer is correct;
    token_accuracy: mean teacher-forced token accuracy (None unless every instance has one);
    pass_rate (with final_states_correct only): share whose final tool state is correct (the paper's pass rate).
"""

import datasets
import evaluate

_DESCRIPTION = __doc__
_CITATION = """@inproceedings{malach2026infinity,
  title={To Infinity and Beyond: Tool-Use Unlocks Length Generalization in State Space Models},
  author={Malach, Eran and Saremi, Omid and Williamson, Sinead and Bradley, Arwen and Lotfi, Aryo and
          Abbe, Emmanuel and Susskind, Josh and Littwin, Etai},
  booktitle={ICLR}, year={2026}}"""


class ToolTraceAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_DESCRIPTION,
            features=datasets.Features(
                {
                    "predicted_traces": datasets.Sequence(datasets.Value("string")),
                    "reference_traces": datasets.Sequence(datasets.Value("string")),
                    "answers_correct": datasets.Value("bool"),
                    "token_accuracies": datasets.Value("float64"),
                }
            ),
        )

    def add_batch(self, **inputs):
        """Check the inputs' types before ``datasets`` casts them: it reads the string "False" as True."""
        if inputs.get("answers_correct") is not None:
            _check_flags(inputs["answers_correct"], "answers_correct")
        if "predicted_traces" in inputs and inputs.get("token_accuracies") is None:
            raise ValueError("tool_trace_accuracy: pass token_accuracies too (None for an instance where it was not "
                             "measured)")
        for value in inputs.get("token_accuracies") or []:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 1):
                raise ValueError(f"tool_trace_accuracy: a token accuracy is a fraction in [0, 1] or None, "
                                 f"got {value!r}")
        return super().add_batch(**inputs)

    def _compute(self, predicted_traces, reference_traces, answers_correct, token_accuracies,
                 final_states_correct=None):
        n = len(answers_correct)
        if n == 0:
            raise ValueError("tool_trace_accuracy: no instances to score")
        trace_matches = [
            list(p) == list(r) and ok
            for p, r, ok in zip(predicted_traces, reference_traces, answers_correct, strict=True)
        ]
        scores = {
            "answer_exact_match": sum(answers_correct) / n,
            "trace_exact_match": sum(trace_matches) / n,
            "token_accuracy": None if None in token_accuracies else sum(token_accuracies) / n,
        }
        if final_states_correct is not None:
            _check_flags(final_states_correct, "final_states_correct")
            if len(final_states_correct) != n:
                raise ValueError(f"tool_trace_accuracy: {len(final_states_correct)} final states for {n} instances")
            scores["pass_rate"] = sum(final_states_correct) / n
        return scores


def _check_flags(values, name: str) -> None:
    if isinstance(values, (str, bytes)) or not all(isinstance(value, bool) for value in values):
        raise ValueError(f"tool_trace_accuracy: {name} is a list of True/False, one per instance; got {values!r:.80}")
