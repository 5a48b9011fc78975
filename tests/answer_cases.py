"""Answer-checking cases for the `math` and `choice` checks: (completion, reference, expected correct).

Written the way teacher models write answers (R1-style traces with a summary after </think>,
self-corrections, "**Final Answer**", Minerva's "Final Answer: The final answer is X. I hope it is
correct.", units, percentages, LaTeX \\text{} and \\dfrac, thousands separators and decimal commas,
Unicode minus, intervals, sets, tuples, letters as (B) / Option B / **B** / B)). Several are modelled
on the regression cases of answer-verification projects (huggingface/Math-Verify's tests, the Qwen2.5-Math
grader's, lm-eval's Minerva math); the texts here are our own. tests/test_math_verify_parity.py runs
them through our checks and through math-verify alone.
"""

from __future__ import annotations

# A long working section: more than math.CLUSTER_GAP characters between the trace's boxes and the summary's.
_WORK = (
    "Setting x = 0 and y = 0 gives 2f(0) = f(0) - 1, so f(0) = -1. Setting y = 1 gives f(x+1) = f(x) + x + 2, "
    "so f is quadratic: f(x) = (x^2 + 3x - 2)/2, and f(n) = n becomes n^2 + n - 2 = 0, that is (n - 1)(n + 2) = 0. "
)

# ---------------------------------------------------------------------------- math: one class per issue point

MULTI_BOX = [
    # a reference in several parts matches the answer boxed in as many parts
    (r"The roots are $x = \boxed{3}$ and $x = \boxed{5}$.", "3, 5", True),
    (r"**Final Answer**" "\n" r"The integers are \boxed{-2} and \boxed{1}.", "1,-2", True),
    (
        "<think>\n" + _WORK + r"So the integers are \boxed{-2} and \boxed{1}."
        "\n</think>\n\n" + _WORK + r"Thus the integers are: \[ \boxed{-2} \quad \text{and} \quad \boxed{1}. \]",
        "1,-2",
        True,
    ),
    (r"So $x = \boxed{1}$ and $y = \boxed{2}$.", "x=1, y=2", True),
    (r"Hence x=\boxed{1}, y=\boxed{2}.", "(1,2)", True),
    (r"$\boxed{1}\boxed{2}$", "1, 2", True),
    (r"Part (a): \boxed{12}." "\n\n" "Part (b). " + _WORK + r"so the second count is \boxed{7}.", "12, 7", True),
    (r"The solutions are \boxed{\frac{1}{2}} and \boxed{-3}.", r"-3, \frac{1}{2}", True),
    # ... but a self-correction still means the last box
    (r"\boxed{1}. Wait, actually \boxed{2}.", "2", True),
    (r"\boxed{1}. Wait, actually \boxed{2}.", "1, 2", False),
    (r"\boxed{1}. Wait, actually \boxed{2}.", "1", False),
    (r"First I get \boxed{3}. Hmm, let me recompute: \boxed{4}.", "3, 4", False),
    (r"I wrote \boxed{5}, but that was a mistake: the answer is \boxed{6}", "6", True),
    # order matters in a tuple; a hedge over three boxes is not a two-part answer
    (r"Hence x=\boxed{2}, y=\boxed{1}.", "(1,2)", False),
    (r"It is \boxed{1}, \boxed{2}, or \boxed{3}.", "2, 3", False),
    # one-part references read the last box only (math-verify merges every box into one set)
    (r"x = \boxed{3}, so y = \boxed{5}", "5", True),
    (r"First \boxed{4} cookies are eaten, so \boxed{8} remain.", "8", True),
    (r"$\boxed{1}$ and $\boxed{2}$", "2", True),
]

STATED_FINAL = [
    # an explicit final answer after a boxed intermediate result wins
    (
        r"The interest on the first CD is $0.04 \cdot 10{,}000 \cdot \frac12 = \boxed{200}$. On the second it is "
        r"$0.05 \cdot 10{,}200 \cdot \frac12 = \boxed{255}$, so he has \$10,455. "
        "Final Answer: The final answer is $10,455$. I hope it is correct.",
        "10455",
        True,
    ),
    (r"The area is \boxed{12}. The perimeter is 2(3 + 4) = 14. Final Answer: The final answer is 14.", "14", True),
    (r"Step 1 gives \boxed{3} pairs." "\n\n" "**Final Answer:** 7", "7", True),
    (r"For one toss it is \boxed{\frac{1}{2}}; for both, the final answer is $\frac{1}{4}$.", "1/4", True),
    (r"The area is \boxed{12}." "\n\n" "**Final Answer**\n" "The perimeter is 14.", "14", True),
    (r"One box holds \boxed{6} eggs. final answer: 18 eggs", "18", True),
    (
        r"The domain is $\boxed{[-3, 2]}$. Final Answer: The final answer is $(-\infty, -3] \cup [2, \infty)$. "
        "I hope it is correct.",
        "[-3,2]",
        False,
    ),
    # ... while a box after the statement, or a statement with no answer in it, leaves the box in charge
    (r"The final answer is 5? Let me verify: 2 + 4 = 6, so \boxed{6}.", "6", True),
    (r"\boxed{42}" "\n\n" "I hope this is the final answer.", "42", True),
    (r"**Final Answer**" "\n" r"\[" "\n" r"\boxed{189}" "\n" r"\]", "189", True),
    (r"**Final Answer**" "\n" r"The answer is $\boxed{7}$ apples.", "7", True),
    ("Final Answer: The volume of the prism is 120. I hope it is correct.", "120", True),
    ("Final Answer: The final answer is 12,000,023. I hope it is correct.", "12000023", True),
]

DECIMAL_COMMA = [
    ("The answer is 1.22", "1,22", True),
    (r"\boxed{1.22}", "1,22", True),
    (r"\boxed{1,22}", "1,22", True),
    (r"\boxed{0.5}", "0,5", True),
    (r"\boxed{2,5}", "2.5", True),
    ("Soucis : 2,74 $ a..", "2.74", True),
    (r"\boxed{3,5}", "3, 5", True),
    (r"\boxed{-2, 1}", "-2,1", True),
    # thousands separators stay thousands
    (r"\boxed{1,234}", "1234", True),
    (r"\boxed{1.234}", "1,234", False),
    ("The answer is 1,000,000", "1000000", True),
    (r"\boxed{10{,}000}", "10000", True),
    (r"\boxed{32,\!349}", "32349", True),
    (r"\boxed{\$1,250.50}", "1250.5", True),
    (r"\boxed{1.5}", "1,22", False),
]

NOTATION = [
    # R1-style traces, Markdown, units, percentages, \text{}, \dfrac, Unicode minus, intervals, sets, tuples
    ("<think>\nIt is 12... no wait, 13.\n</think>\n\nThe total is **13**.", "13", True),
    ("The temperature falls to \u22125 degrees, so the answer is \u22125.", "-5", True),
    ("The answer is \u22125.", "-5", True),
    ("The answer is \u22125.", "5", False),
    ("\\boxed{\u22123}", "-3", True),
    (r"\boxed{5\text{ cm}^2}", "5", True),
    (r"The area is $\boxed{15\mbox{ cm}^2}$.", "15", True),
    (r"\boxed{12\%}", "12", True),
    (r"\boxed{12\%}", "0.12", True),
    (r"\boxed{\dfrac{7}{2}}", "3.5", True),
    (r"\boxed{-\dfrac{7}{2}}", "3.5", False),
    (r"\boxed{(-\infty, 3) \cup (3, \infty)}", r"(-\infty,3)\cup(3,\infty)", True),
    (r"\boxed{\{2, 3\}}", "3, 2", True),
    (r"\boxed{(2, 3)}", "(3, 2)", False),
    (r"The point is $\boxed{\left( 3, \frac{\pi}{2} \right)}$.", r"(3, \frac{\pi}{2})", True),
    (r"\boxed{x \in [-2, 7]}", "[-2,7]", True),
    (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True),
    (r"So the answer is $\boxed{0.3333333}$", r"\frac{1}{3}", True),
    (r"So the answer is $\boxed{0.333}$", r"\frac{1}{3}", False),
    (r"\boxed{2.0000004}", "2", False),
    (r"\boxed{1,000.0}", "1000", True),
    (r"\boxed{007}", "7", True),
    ("The answer is 42.", "42", True),
    ("So the answer is **73**", "73", True),
]

MATH_CASES = MULTI_BOX + STATED_FINAL + DECIMAL_COMMA + NOTATION

# ---------------------------------------------------------------------------- choice: the stated letter

CHOICE_CASES = [
    ("The answer is D, it can't be A or B", "D", True),
    ("A. Because B is not valid", "A", True),
    ("A. Because B is not valid", "B", False),
    ("I'd go with (C). Options A and B fail the second condition.", "C", True),
    ("**Answer: B**\n\nExplanation: A ignores the friction, and D double counts it.", "B", True),
    ("The correct option is (C), not (A).", "C", True),
    ("(B) is the correct answer; (A) and (D) are distractors.", "B", True),
    ("Answer: (D)\n\nWhy not A? Because the slope is negative.", "D", True),
    ("<think>Maybe A? No, B fits better. Let me check C.</think>\nThe answer is **C**.", "C", True),
    ("The answer is A. Wait, the answer is C.", "C", True),
    ("The answer is not A; it must be B.", "B", True),
    ("Between B and D, I choose D.", "D", True),
    ("B is correct. A is incorrect since it ignores the units.", "B", True),
    ("**(C)** 42 apples", "C", True),
    (r"Final Answer: $\boxed{\text{(B)}}$", "B", True),
    ("ANSWER: B", "B", True),
    ("So the answer should be (E).", "E", True),
    ("Correct choice: D. Choices A and B are wrong.", "D", True),
    ("Option B)", "B", True),
    ("The answer is option C, since option A double counts.", "C", True),
    ("A. 3 apples: too few.\nB. 4 apples: fits.\nC. 5 apples: too many.", "A", None),  # a list, no statement
]
