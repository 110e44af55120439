"""The fast.ai course (v3 part 2, notebooks 04-12a) on fastloop's engine.

A course notebook starts with ``from exp.nb_XX import *``; change that line to ``from fastloop.course.nb_XX import
*`` and nothing else.  Each ``nb_XX`` module gives the names ``exp.nb_XX`` gave, with the meanings they had *at that
notebook* (``nb_05b.Learner`` is the 04 container trained by a ``Runner``; ``nb_09b.Learner`` trains by itself;
``AvgStatsCallback`` prints in 04, logs in 09b, writes a timed table in 09c).  ``from fastloop.course import *`` is
``nb_12a``, the latest namespace.

Where the code lives: ``stageXX.py`` holds what notebook XX defined or redefined (``stage04``, ``stage05``,
``stage05b``, ``stage06`` (06-07a), ``stage08``, ``stage09``, ``stage09b``, ``stage09c``, ``stage10b``, ``stage10c``,
``stage11`` (11, 11a), ``stage12a``); ``callbacks.py`` the base `Callback`, `TrainEvalCallback`, the ``Cancel*``
exceptions and the event names; ``schedules.py`` and ``optim.py`` the schedules and the optimizers;
``_engine.py`` how the course style is fired through fastloop's one dispatch core (`fastloop._dispatch`), the
same functions fastai v1's `CallbackHandler` uses; ``adapter.py`` the adapter that runs fastai v1 callbacks in
the course `Learner`.  The ``nb_XX`` modules only re-export.

One engine, two styles
----------------------
The course `Learner` (09b) and fastai v1's `fastloop.basic_train.Learner` share the dispatch core: call lists
built once per change of the callback list (base-class no-ops skipped), hook-name and signature checks, error
notes naming the callback and the event.  Each keeps its own short loop, because their exception flows differ:
v1 fires ``on_train_begin`` outside its ``try`` and skips ``on_batch_end`` when a batch fails; the course runs
``after_batch`` and ``after_fit`` in ``finally`` blocks and catches its ``Cancel*`` exceptions at three levels.
A fastai v1 callback (``MRNetCallback``-style ``on_batch_begin(self, last_input, last_target, **kwargs)``
returning a dict) can be put in a course `Learner`'s ``cbs``: it is wrapped in `V1CallbackAdapter`, sorted with
the course callbacks by ``_order``, and sees a ``state_dict`` view built from the learner (see
`fastloop.course.adapter` for the event and key mapping).

Decisions where the two styles (or the course's own versions) contradict each other
------------------------------------------------------------------------------------
==================  =========================================================================================
topic               fastloop's decision
==================  =========================================================================================
event names         Course names (``begin_*``/``after_*``) for course callbacks, ``on_*`` for v1 ones; the
                    adapter maps them (``after_pred`` -> ``on_loss_begin``, ``after_loss`` ->
                    ``on_backward_begin`` ...).  fastai2's ``before_*`` names are not aliased: a course callback
                    defining ``before_fit`` gets a warning "did you mean `begin_fit`?" (an error with
                    ``defaults.strict_callbacks``).
validation hook     ``begin_validate`` fires for course callbacks and has no v1 counterpart; ``after_loss`` fires in
                    validation for course callbacks, but the adapter fires ``on_backward_begin`` in training only,
                    as v1 does.
return values       Kept apart.  04 ``Runner``: a True return stops the event and steers the loop (as in the
                    course).  05b ``Runner`` and 09b ``Learner``: returns are ignored (as the *exported* modules
                    did; the 05b notebook cell ORed them).  v1 callbacks return dicts to the adapter, which applies
                    them with v1's rules; a v1 dict never reaches the course rule (so TeacherForcing's dict is not
                    read as "stop").
stopping            Both: ``Cancel*Exception`` (immediate, later callbacks do not see the event) and v1's flags
                    ``stop_epoch``/``stop_training``/``skip_validate`` (after the event, every callback has seen it),
                    which are attributes of the 09b ``Learner``.
skip step           Only through the explicit ``skip_step`` flag (``self.run.skip_step = True``), read after
                    ``after_backward``; ``skip_bwd`` and ``skip_zero`` likewise.  The course's MixedPrecision returned
                    True to skip the step, which its Learner ignored (the step ran); fastloop's ``MixedPrecision``
                    sets the flag, so the step really is skipped on an overflow.
``n_epochs``        The course's fractional progress on the learner (``learn.n_epochs``); in the v1 view
                    ``n_epochs`` is ``learn.epochs``, the number asked for.
counters            Course: ``epoch`` (0-based), ``iter`` (restarts each loop), ``n_iter`` (training batches of this
                    fit).  v1 view: ``iteration``/``num_batch``, moved by the loop after ``after_batch`` (training
                    only), and ``epoch`` = epochs done at ``on_train_end``; both kept as learner attributes.
batch data          Course attributes ``xb``, ``yb``, ``pred``, ``loss`` (live); the v1 view maps them to
                    ``last_input``, ``last_target``, ``last_output``, ``last_loss`` (detached on the CPU at
                    ``on_batch_end``) and writes returned values back.
delegation          Course callbacks: reads fall through to the runner (``self.run``); v1 ``LearnerCallback``: to
                    ``self.learn``.  In a course ``Learner`` both are the learner.  Reading before the runner is
                    attached raises AttributeError (the course recursed until the stack overflowed).
naming              By style: course ``name`` strips ``Callback`` (``AvgStatsCallback`` -> ``avg_stats``,
                    ``LR_Find`` -> ``lr__find``); a v1 callback in a course Learner is registered under v1's name
                    (``MRNetCallback`` -> ``mr_net_callback``).  Collisions overwrite silently, as in both.
factories           Course ``cbs`` (instances) and ``cb_funcs`` (called with no argument, once per learner: their
                    instances keep state across fits, e.g. ``LR_Find.best_loss``).  The 09b ``Learner`` also takes
                    v1 ``callback_fns`` (called with the learner at every fit: fresh instances, as in v1).
Recorder            One class per flavour, by notebook: 05b (per-group lrs from ``param_groups``, ``plot(skip_last,
                    pgid)``) and 09 (``opt.hypers[-1]['lr']``, ``plot(skip_last)``); both record the *raw* loss and
                    trim the *end* with ``skip_last`` (v1's ``plot(skip_start, skip_end)`` trims the start first).
optimizer hypers    ``opt.hypers`` works for torch optimizers too (``add_hypers``: dict views with the aliases
                    ``mom`` -> ``momentum``/``betas[0]``, ``sqr_mom`` -> ``betas[1]``/``alpha``, ``wd`` ->
                    ``weight_decay``); v1's ``beta`` is the course's ``sqr_mom``.  Nothing is patched globally.
model call          v1's rule: ``model(*xb)`` when ``xb`` is a list or tuple (TeacherForcing, CycleGAN), else
                    ``model(xb)``; ``loss_func(pred, *yb)`` likewise.  The course always passes tensors.
sorting             Stable sort by ``_order`` (ties keep registration order: TrainEvalCallback, ``cbs``,
                    ``cb_funcs`` instances, fit-time ``cbs``); v1 and course orders compare directly.  The call
                    lists are rebuilt when the list or an ``_order`` changes (the course re-sorted every event).
begin_epoch count   Once per epoch (the fixed 09b notebook).  The exported ``nb_09b`` fired it twice, and 09c-12c
                    imported that; course callbacks must not depend on it.
combine_scheds      Clamps ``pos == 1.0`` into the last phase (the notebook cell; the export raised IndexError)
                    and hands phases a float position (the course's 0-dim tensor made ``sched_lin`` return
                    tensors, which today's torch optimizers reject as an lr with ``foreach``).
MixUp quirk         Reproduced: λ of shape ``(bs,1,1,1)`` against per-sample losses broadcasts to
                    ``(bs,1,1,bs)``, so the loss uses the batch-mean λ.
RNNTrainer TAR      The exported guard ``len(h) > 1`` (the notebook cell later used ``h.size(1) > 1``).
smooth_loss         Computed by the 09b ``Learner`` as v1 does (debiased EMA, beta 0.98, raw training loss), kept
                    on the loss's device (no host sync per batch).
No import-time CUDA ``norm_imagenette`` moves its statistics to the batch's device when called; ``CudaCallback``
                    takes a device (CUDA if available, else the CPU); ``MixedPrecision`` uses ``torch.autocast``
                    (no apex).
==================  =========================================================================================

Not ported (they are not about training loops): the data block API and PIL transforms (08, 10), tokenizers (12,
spaCy), the AWD-LSTM and XResNet model code (12a, 11), ``cnn_learner`` (11), LSUV (07a), and the 04 handler-era
``CallbackHandler`` (its callbacks returned True to *continue*).
"""

# ruff: noqa: F401, F403

from . import nb_12a as _latest
from .nb_12a import *

__all__ = list(_latest.__all__)
