"""Pages of the example judge: contests, problems, submitting, a live submission page."""

from __future__ import annotations

from datetime import datetime

from django import forms
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render

from django_bridge.contest import contest_channel
from django_bridge.progress import submission_channel, submission_queued, user_channel
from judge.models import Contest, Problem, Submission


class SubmitForm(forms.Form):
    language = forms.ChoiceField(choices=[("python", "Python 3"), ("cpp", "C++17")])
    source = forms.CharField(widget=forms.Textarea(attrs={"rows": 12, "cols": 80}))


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "judge/index.html", {"contests": Contest.objects.order_by("-id")})


def contest_detail(request: HttpRequest, contest_id: int) -> HttpResponse:
    """The contest: clock and freeze banner, announcements, problems, your submissions live."""
    contest = get_object_or_404(Contest, pk=contest_id)
    mine = (
        Submission.objects.filter(problem__contest=contest, user=request.user).select_related(
            "problem"
        )[:20]
        if request.user.is_authenticated
        else []
    )
    # the user's channel carries submission.judged: "your submissions" update live
    mine_channel = user_channel(request.user.pk) if request.user.is_authenticated else ""
    freeze_at = getattr(contest, "freeze_at", None)  # a model with a freeze time shows it
    return render(
        request,
        "judge/contest.html",
        {
            "contest": contest,
            "submissions": mine,
            "contest_channel": contest_channel(contest.pk),
            "user_channel": mine_channel,
            # epoch ms: the page compares them with the server's clock (rt.now())
            "clock": {
                "starts": _ms(contest.starts_at),
                "ends": _ms(contest.ends_at),
                "freeze": _ms(freeze_at) if freeze_at else None,
            },
        },
    )


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def problem_detail(request: HttpRequest, problem_id: int) -> HttpResponse:
    problem = get_object_or_404(Problem, pk=problem_id)
    form = SubmitForm(request.POST or None)
    if request.method == "POST":
        if not request.user.is_authenticated:
            return redirect("login")
        if form.is_valid():
            with transaction.atomic():
                submission = Submission.objects.create(
                    problem=problem,
                    user=request.user,
                    language=form.cleaned_data["language"],
                    source=form.cleaned_data["source"],
                )
                # sent when this transaction commits: a judge can never see it first
                submission_queued(submission.pk)
            return redirect("submission", submission_id=submission.pk)
    return render(request, "judge/problem.html", {"problem": problem, "form": form})


@login_required
def submission_detail(request: HttpRequest, submission_id: int) -> HttpResponse:
    submission = get_object_or_404(Submission.objects.select_related("problem"), pk=submission_id)
    if submission.user_id != request.user.pk and not request.user.is_staff:
        raise Http404("no such submission")
    return render(
        request,
        "judge/submission.html",
        {"submission": submission, "submission_channel": submission_channel(submission.pk)},
    )
