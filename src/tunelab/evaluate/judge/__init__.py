"""The LLM judge: a metric family in evaluate/ that calls its judge model through a Backend.

Modules (docs/judge.md):
- labels.py: human-labelled pairs and recorded verdicts (LLMBar, PandaLM test set, Auto-J pairwise)
  read into one shape; `builtin:llmbar-natural` ships with the package.
- agreement.py: how far a judge agrees with the human labels (accuracy, agreement with and without
  ties, Cohen's kappa, order consistency, preference for the longer answer), each with a 95% CI.

A verdict everywhere is an int in the ORIGINAL order of the pair: 1 = the first answer is better,
2 = the second, 0 = a tie; None = the judge's text could not be parsed (counted, never dropped).
"""
