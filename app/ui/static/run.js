// The run page: renders the run's snapshot (embedded in the page) and keeps it current from
// the server's event stream (one EventSource per page; the server sends only changes).
// Plain browser JavaScript, no libraries: graph colours, steps table, timeline, step detail.
(function () {
  'use strict';

  var state = JSON.parse(document.getElementById('snapshot').textContent);
  var runId = state.run.workflowId;
  var selected = null;
  var OPEN = ['RUNNING', 'PAUSED'];
  var SVG = 'http://www.w3.org/2000/svg';
  var STEP_STATUSES = ['COMPLETED', 'COMPLETED_WITH_ERRORS', 'IN_PROGRESS', 'SCHEDULED',
    'FAILED', 'FAILED_WITH_TERMINAL_ERROR', 'TIMED_OUT', 'CANCELED', 'SKIPPED'];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === 'text') { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    (children || []).forEach(function (child) { if (child) { node.appendChild(child); } });
    return node;
  }

  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs).forEach(function (name) {
      if (name === 'text') { node.textContent = attrs[name]; } else { node.setAttribute(name, attrs[name]); }
    });
    return node;
  }

  function time(ms) {
    if (ms === null || ms === undefined) { return '-'; }
    return new Date(ms).toISOString().replace('T', ' ').slice(0, 19);
  }

  function duration(ms) {
    if (ms === null || ms === undefined || isNaN(ms)) { return '-'; }
    if (ms < 60000) { return (ms / 1000).toFixed(2) + 's'; }
    var s = Math.floor(ms / 1000);
    return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
  }

  function json(value) {
    return value === undefined ? '' : JSON.stringify(value, null, 2);
  }

  function isOpen() { return OPEN.indexOf(state.run.status) >= 0; }

  function orderedSteps() {
    return Object.keys(state.steps).map(function (ref) { return state.steps[ref]; })
      .sort(function (a, b) {
        var ta = a.startTime || a.scheduledTime || a.endTime || Infinity;
        var tb = b.startTime || b.scheduledTime || b.endTime || Infinity;
        return ta === tb ? (a.ref < b.ref ? -1 : 1) : ta - tb;
      });
  }

  function waitOf(step) {
    return step.scheduledTime && step.startTime ? step.startTime - step.scheduledTime : null;
  }

  function runTimeOf(step) {
    if (!step.startTime) { return null; }
    return (step.endTime || (isOpen() ? Date.now() : step.startTime)) - step.startTime;
  }

  // -- run header and actions ---------------------------------------------------------------

  function renderRun() {
    var run = state.run;
    var chip = document.getElementById('run-status');
    chip.textContent = run.status;
    chip.className = 'chip run-' + run.status;
    document.getElementById('run-ended').textContent = run.endTime ? time(run.endTime) + ' UTC' : '-';
    document.getElementById('run-reason').textContent = run.reasonForIncompletion || '';
    document.getElementById('run-input').textContent = json(run.input);
    document.getElementById('run-output').textContent = json(run.output);
    document.querySelectorAll('form.action[data-when]').forEach(function (form) {
      form.hidden = form.getAttribute('data-when').split(' ').indexOf(run.status) < 0;
    });
    var waiting = orderedSteps().filter(function (s) {
      return (s.type === 'WAIT' || s.type === 'HUMAN') && s.status === 'IN_PROGRESS';
    });
    var select = document.getElementById('complete-step');
    var chosen = select.value;
    select.textContent = '';
    waiting.forEach(function (s) { select.appendChild(el('option', {value: s.ref, text: s.ref})); });
    if (chosen) { select.value = chosen; }
    var form = document.getElementById('complete-form');
    form.hidden = form.hidden || waiting.length === 0;
  }

  // -- graph --------------------------------------------------------------------------------

  function renderGraph() {
    var byBase = {};
    Object.keys(state.steps).forEach(function (ref) {
      var step = state.steps[ref];
      var entry = byBase[step.base] || (byBase[step.base] = {latest: null, iterations: 0, branches: 0});
      if (step.iteration !== null) { entry.iterations = Math.max(entry.iterations, step.iteration); }
      if (!entry.latest || (step.iteration || 0) >= (entry.latest.iteration || 0)) { entry.latest = step; }
      if (step.branchOf) {
        var fork = byBase[step.branchOf] || (byBase[step.branchOf] = {latest: null, iterations: 0, branches: 0});
        fork.branches += 1;
      }
    });
    document.querySelectorAll('#graph g.node').forEach(function (node) {
      var ref = node.getAttribute('data-ref');
      var entry = byBase[ref];
      var status = entry && entry.latest ? entry.latest.status : 'none';
      var classes = (node.getAttribute('class') || '').split(' ').filter(function (c) {
        return c.indexOf('st-') !== 0;
      });
      classes.push('st-' + status);
      node.setAttribute('class', classes.join(' '));
      node.setAttribute('data-status', status);
      var badge = node.querySelector('text.badge');
      if (badge) {
        var text = '';
        if (entry && entry.iterations > 0) { text = '×' + entry.iterations; }
        if (entry && entry.branches > 0) { text = entry.branches + ' branches'; }
        badge.textContent = text;
      }
      if (!node.getAttribute('data-bound') && ref) {
        node.setAttribute('data-bound', '1');
        node.addEventListener('click', function () {
          var found = byBaseLatest(ref);
          if (found) { select(found); }
        });
      }
    });
  }

  function byBaseLatest(base) {
    var best = null;
    Object.keys(state.steps).forEach(function (ref) {
      var step = state.steps[ref];
      if (step.base === base && (!best || (step.iteration || 0) >= (best.iteration || 0))) { best = step; }
    });
    return best ? best.ref : null;
  }

  function renderLegend() {
    var legend = document.getElementById('legend');
    STEP_STATUSES.forEach(function (status) {
      legend.appendChild(el('span', {'class': 'chip st-' + status, text: status}));
    });
  }

  // -- steps table --------------------------------------------------------------------------

  function stepLabel(step) {
    var label = el('span', {}, [el('a', {href: '#step-' + step.ref, text: step.ref})]);
    if (step.iteration !== null) {
      label.appendChild(el('span', {'class': 'tag', text: 'iteration ' + step.iteration + ' of ' + step.base}));
    }
    if (step.branchOf) {
      label.appendChild(el('span', {'class': 'tag', text: 'dynamic branch of ' + step.branchOf}));
    }
    return label;
  }

  function links(step) {
    var cell = el('td', {});
    if (step.child) { cell.appendChild(el('a', {href: '/runs/' + step.child, 'class': 'child', text: 'child run'})); }
    if (step.flower) {
      if (step.child) { cell.appendChild(document.createTextNode(' ')); }
      cell.appendChild(el('a', {href: step.flower, target: '_blank', rel: 'noopener', 'class': 'flower', text: 'Flower'}));
    }
    return cell;
  }

  function renderSteps() {
    var body = document.getElementById('steps');
    body.textContent = '';
    orderedSteps().forEach(function (step) {
      var row = el('tr', {'data-ref': step.ref, id: 'step-' + step.ref, 'class': step.ref === selected ? 'selected' : ''}, [
        el('td', {}, [stepLabel(step)]),
        el('td', {text: step.type || ''}),
        el('td', {}, [el('span', {'class': 'chip st-' + step.status, text: step.status})]),
        el('td', {text: String(step.attempts)}),
        el('td', {text: step.worker || ''}),
        el('td', {text: time(step.startTime)}),
        el('td', {text: duration(runTimeOf(step))}),
        el('td', {text: duration(waitOf(step))}),
        links(step)
      ]);
      row.addEventListener('click', function (event) {
        if (event.target.tagName !== 'A' || event.target.getAttribute('href').charAt(0) === '#') { select(step.ref); }
      });
      body.appendChild(row);
      if (step.error) {
        body.appendChild(el('tr', {'class': 'error-row'}, [
          el('td', {colspan: '9', 'class': 'step-error', 'data-ref': step.ref,
            text: (step.error.type ? step.error.type + ': ' : '') + (step.error.message || '')})
        ]));
      }
    });
  }

  // -- timeline (Gantt) ---------------------------------------------------------------------

  function renderTimeline() {
    var holder = document.getElementById('timeline');
    holder.textContent = '';
    var steps = orderedSteps().filter(function (s) { return s.startTime || s.scheduledTime || s.endTime; });
    if (!steps.length) { holder.appendChild(el('p', {'class': 'note', text: 'No step has started yet.'})); return; }
    var now = Date.now();
    var start = state.run.createTime || Infinity;
    var end = state.run.endTime || 0;
    steps.forEach(function (s) {
      [s.scheduledTime, s.startTime].concat(s.failedAttempts.map(function (a) { return a.startTime; }))
        .forEach(function (t) { if (t) { start = Math.min(start, t); } });
      [s.endTime, s.startTime].forEach(function (t) { if (t) { end = Math.max(end, t); } });
    });
    if (isOpen()) { end = Math.max(end, now); }
    var span = Math.max(end - start, 1);
    var label = 170, width = Math.max(holder.clientWidth || 900, 500), row = 22, top = 20;
    var plot = width - label - 50;
    var svg = svgEl('svg', {width: width, height: top + steps.length * row + 6, 'class': 'gantt'});
    for (var i = 0; i <= 4; i++) {
      var x = label + plot * i / 4;
      svg.appendChild(svgEl('line', {x1: x, x2: x, y1: 14, y2: top + steps.length * row, 'class': 'tick'}));
      svg.appendChild(svgEl('text', {x: x, y: 11, 'class': 'tick-label', text: '+' + duration(span * i / 4)}));
    }
    function bar(y, from, to, cls, title) {
      var x1 = label + plot * (from - start) / span;
      var x2 = label + plot * (to - start) / span;
      var rect = svgEl('rect', {x: x1, y: y + 4, width: Math.max(x2 - x1, 2), height: row - 8, 'class': 'bar ' + cls});
      rect.appendChild(svgEl('title', {text: title}));
      svg.appendChild(rect);
    }
    steps.forEach(function (step, index) {
      var y = top + index * row;
      var name = svgEl('text', {x: 4, y: y + 15, 'class': 'row-label', 'data-ref': step.ref, text: step.ref});
      name.addEventListener('click', function () { select(step.ref); });
      svg.appendChild(name);
      step.failedAttempts.forEach(function (attempt) {
        if (attempt.startTime && attempt.endTime) {
          bar(y, attempt.startTime, attempt.endTime, 'attempt st-FAILED',
            step.ref + ' attempt ' + attempt.attempt + ' failed after ' + duration(attempt.endTime - attempt.startTime));
        }
      });
      if (step.scheduledTime && step.startTime) {
        bar(y, step.scheduledTime, step.startTime, 'queue', step.ref + ' waited ' + duration(waitOf(step)) + ' in its queue');
      }
      if (step.startTime) {
        var stop = step.endTime && step.endTime >= step.startTime ? step.endTime : (isOpen() ? now : step.startTime);
        bar(y, step.startTime, stop, 'st-' + step.status, step.ref + ' ' + step.status + ', ran ' + duration(stop - step.startTime));
      } else if (step.endTime) {
        bar(y, step.endTime, step.endTime, 'st-' + step.status, step.ref + ' ' + step.status);
      }
    });
    holder.appendChild(svg);
  }

  // -- step detail --------------------------------------------------------------------------

  function section(title, value, id) {
    if (value === null || value === undefined || value === '') { return null; }
    var text = typeof value === 'string' ? value : json(value);
    return el('div', {}, [el('h4', {text: title}), el('pre', id ? {id: id, text: text} : {text: text})]);
  }

  function renderDetail() {
    var holder = document.getElementById('detail');
    holder.textContent = '';
    var step = selected && state.steps[selected];
    if (!step) {
      holder.appendChild(el('p', {'class': 'note', text: 'Choose a step (in the graph, the timeline or the table) to see its input, output and error.'}));
      return;
    }
    var error = step.error || {};
    holder.appendChild(el('h3', {text: step.ref + ' · ' + step.status}));
    holder.appendChild(el('p', {text: (step.type || '') + ' ' + (step.name || '') + ' · attempts ' + step.attempts +
      ' · worker ' + (step.worker || '-') + ' · task ' + (step.taskId || '-')}));
    [section('Input', step.input), section('Output', step.output),
      section('Error', error.message ? (error.type ? error.type + ': ' : '') + error.message : null, 'detail-error'),
      section('Traceback', error.traceback, 'detail-traceback')].forEach(function (part) {
      if (part) { holder.appendChild(part); }
    });
    if (step.failedAttempts.length) {
      holder.appendChild(el('h4', {text: 'Failed attempts'}));
      var list = el('ol', {});
      step.failedAttempts.forEach(function (attempt) {
        var err = attempt.error || {};
        list.appendChild(el('li', {}, [
          el('span', {text: 'attempt ' + attempt.attempt + ' · ' + time(attempt.startTime) + ' → ' + time(attempt.endTime) +
            (attempt.worker ? ' · ' + attempt.worker : '') + ' · ' + (err.type || '') + ': ' + (err.message || '')}),
          err.traceback ? el('pre', {text: err.traceback}) : null
        ]));
      });
      holder.appendChild(list);
    }
  }

  function select(ref) {
    selected = ref;
    renderSteps();
    renderDetail();
  }

  function render() {
    renderRun();
    renderGraph();
    renderSteps();
    renderTimeline();
    renderDetail();
  }

  // -- live updates -------------------------------------------------------------------------

  function apply(changes) {
    if (changes.run) { state.run = changes.run; }
    Object.keys(changes.steps || {}).forEach(function (ref) {
      if (changes.steps[ref] === null) { delete state.steps[ref]; } else { state.steps[ref] = changes.steps[ref]; }
    });
    render();
  }

  if (!selected && state.run.failedReferenceTaskName && state.steps[state.run.failedReferenceTaskName]) {
    selected = state.run.failedReferenceTaskName;
  }
  renderLegend();
  render();
  var source = new EventSource('/runs/' + encodeURIComponent(runId) + '/events');
  source.addEventListener('snapshot', function (event) {
    var fresh = JSON.parse(event.data);
    state.run = fresh.run;
    state.steps = fresh.steps;
    render();
  });
  source.addEventListener('changes', function (event) { apply(JSON.parse(event.data)); });
  source.addEventListener('gone', function () {
    source.close();
    document.getElementById('run-status').textContent = 'EXPIRED';
  });
  // running bars grow between events: drawn again here, nothing asked of the server
  setInterval(function () { if (isOpen()) { renderTimeline(); } }, 1000);
  document.body.setAttribute('data-live', 'ready');
}());
