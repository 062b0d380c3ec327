console.log('roamdesk');
